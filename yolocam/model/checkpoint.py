"""Load a `.pt` checkpoint from exactly the file the user named.

ultralytics looks a checkpoint name up as a downloadable asset before it opens it: it drops
quotes (`a'b.pt` -> `ab.pt`), renames YOLOv3/v5 names (`yolov5s.pt` -> `yolov5su.pt`), strips
spaces and falls back to its weights folder. yolocam checks that the file exists and then has
ultralytics open that path as given: while one of these loads runs, the asset lookup returns
the named path itself (other names still go through the usual lookup).
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import Iterator

from .._offline import ultralytics_offline
from ..errors import YolocamError

_PATCH_LOCK = threading.RLock()


def exact_name(path: str | os.PathLike) -> str:
    """The name to hand ultralytics for the existing file (or exported model folder) `path`: as given, or
    absolute where ultralytics would strip surrounding spaces from it."""
    name = os.fspath(path)
    if not Path(name).exists():
        raise YolocamError(f"model file not found: {name}")
    return name if name == name.strip() else os.path.abspath(name)


@contextlib.contextmanager
def exact_path(name: str) -> Iterator[str]:
    """While inside: ultralytics' asset lookup resolves `name` to itself. Loads under it run one at a time."""
    ultralytics_offline()
    from ultralytics.utils import downloads

    with _PATCH_LOCK:
        lookup = downloads.attempt_download_asset

        def exact_lookup(file, *args, **kwargs):
            return name if os.fspath(file) == name else lookup(file, *args, **kwargs)

        downloads.attempt_download_asset = exact_lookup
        try:
            yield name
        finally:
            downloads.attempt_download_asset = lookup


def load_checkpoint_module(path: str | os.PathLike):
    """The inner `nn.Module` of the checkpoint file `path` (on the CPU), from that very file."""
    from ultralytics.nn.tasks import load_checkpoint

    name = exact_name(path)
    try:
        with exact_path(name):
            module, _ = load_checkpoint(name, device="cpu")
    except Exception as exc:
        raise YolocamError(f"cannot load model checkpoint {os.fspath(path)}: {type(exc).__name__}: "
                           f"{' '.join(str(exc).split())}") from None
    return module


def load_yolo(path: str | os.PathLike, task: str | None = "detect"):
    """An `ultralytics.YOLO` on the checkpoint file `path`, loaded from that very file."""
    from ultralytics import YOLO

    name = exact_name(path)
    try:
        with exact_path(name):
            return YOLO(name, task=task)
    except Exception as exc:
        raise YolocamError(f"cannot load model checkpoint {os.fspath(path)}: {type(exc).__name__}: "
                           f"{' '.join(str(exc).split())}") from None
