"""Import ultralytics so that it never reaches for the network.

yolocam must work on machines with no internet: no weight, font or dataset downloads,
no telemetry. Importing this module (the package does, first) sets the environment switches
that ultralytics reads on import, without importing anything heavy; `ultralytics_offline()`
(called by the model side, `model/adapter.py`) turns off its network settings.
"""

from __future__ import annotations

import os

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_VERBOSE", "False")
# never pip-install at run time (ultralytics' `check_requirements` would, for an ONNX or OpenVINO model
# whose runtime is missing): yolocam says which extra to install instead (`model/backend.py`)
os.environ.setdefault("YOLO_AUTOINSTALL", "False")
# ultralytics sets this default on import (one OpenMP thread unless the user chose otherwise). The
# package imports ultralytics only when a model is loaded, possibly after torch, so it sets the same
# default up front: torch's thread count then does not depend on which of the two came first.
if not os.environ.get("OMP_NUM_THREADS"):
    os.environ["OMP_NUM_THREADS"] = "1"


def ultralytics_offline() -> None:
    """Turn off ultralytics' settings that would talk to the network (idempotent)."""
    try:
        from ultralytics.utils import SETTINGS
    except Exception:  # pragma: no cover - ultralytics is a hard dependency
        return
    wanted = {"sync": False, "hub": False}
    try:
        if any(SETTINGS.get(k) != v for k, v in wanted.items()):
            SETTINGS.update(wanted)
    except Exception:  # a read-only settings file must not stop an explanation
        pass
