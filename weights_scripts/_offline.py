"""Make ultralytics fully offline before it is imported (no weights/fonts/telemetry fetches).

Import this module first in every script of this folder.
"""

import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="yolocam_ulcfg_"))
os.environ.setdefault("OMP_NUM_THREADS", "2")

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from ultralytics import settings  # noqa: E402

settings.update({"sync": False})
