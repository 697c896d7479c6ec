"""Checks of the arguments users pass to `Explainer` and `explain`: one `YolocamError` naming the argument,
what was expected and what was received, instead of an exception from deep inside torch.
"""

from __future__ import annotations

import logging
import math
import numbers
from typing import Iterable

import torch

from ..defaults import MAX_IMGSZ
from ..errors import YolocamError

log = logging.getLogger("yolocam")

DEVICES = "cpu, cuda, cuda:N, N (= cuda:N) or mps"


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_device(device) -> torch.device | None:
    """`device` as a `torch.device` that exists on this machine; None stays None (the model's device).

    Accepts a `torch.device`, `cpu`, `cuda`, `cuda:N`, an index N (= cuda:N) or `mps`.
    """
    if device is None:
        return None
    if isinstance(device, torch.device):
        dev = device
    elif _is_int(device) or isinstance(device, str):
        spec = str(device).strip().lower()
        spec = f"cuda:{spec}" if spec.isdigit() else spec
        try:
            dev = torch.device(spec) if spec else None
        except (RuntimeError, ValueError):
            dev = None
        if dev is None or dev.type not in ("cpu", "cuda", "mps"):
            raise YolocamError(f"device: expected {DEVICES}, got {device!r}")
    else:
        raise YolocamError(f"device: expected {DEVICES}, got {device!r} ({type(device).__name__})")
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise YolocamError(f"device {device!r} asked for, but CUDA is not available here; use device 'cpu'")
        if (dev.index or 0) >= n:
            raise YolocamError(f"device {device!r} asked for, but this machine has CUDA devices 0..{n - 1}")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise YolocamError(f"device {device!r} asked for, but MPS is not available here; use device 'cpu'")
    return dev


def check_imgsz(imgsz) -> None:
    """A positive int up to `MAX_IMGSZ` (or None); the stride rounding comes once the model is known
    (`round_imgsz`)."""
    if imgsz is not None and (not _is_int(imgsz) or not 1 <= imgsz <= MAX_IMGSZ):
        raise YolocamError(f"imgsz: expected a positive integer of at most {MAX_IMGSZ} (pixels, long side; "
                           f"yolocam.defaults.MAX_IMGSZ), got {imgsz!r}")


def round_imgsz(imgsz: int, stride: int) -> int:
    """`imgsz` rounded up to a multiple of the model's largest stride (at least one stride), with one
    warning when that changes it, as ultralytics' `check_imgsz` does."""
    size = max(math.ceil(int(imgsz) / stride) * stride, stride)
    if size > MAX_IMGSZ:  # e.g. a size recorded in a checkpoint
        raise YolocamError(f"imgsz {imgsz} (a multiple of the model's stride {stride}: {size}) is over the maximum "
                           f"of {MAX_IMGSZ} pixels (yolocam.defaults.MAX_IMGSZ); pass a smaller imgsz")
    if size != imgsz:
        log.warning("imgsz=%d must be a multiple of the model's max stride %d, updating to %d", imgsz, stride, size)
    return size


def check_memory(memory_mb, max_batch) -> None:
    """`memory_mb`: a finite positive number (MiB); `max_batch`: None or a positive integer. A CAM engine
    setting, checked with the others by `CamSettings.check` (`cam/engine.py`); kept here for callers."""
    from ..cam.engine import check_memory as check

    check(memory_mb, max_batch)


def check_thresholds(conf, iou, max_det, batch) -> None:
    for name, value in (("conf", conf), ("iou", iou)):
        if not _is_real(value) or not 0.0 <= float(value) <= 1.0:  # NaN fails the comparison
            raise YolocamError(f"{name}: expected a number in [0, 1], got {value!r}")
    for name, value in (("max_det", max_det), ("batch", batch)):
        if not _is_int(value) or value < 1:
            raise YolocamError(f"{name}: expected a positive integer, got {value!r}")


def resolve_classes(classes, names: dict[int, str], what: str = "classes") -> list[int] | None:
    """Class indices for `classes`: None (all), one index or name, or an iterable of indices and names."""
    if classes is None:
        return None
    items: Iterable = [classes] if isinstance(classes, (str, numbers.Number)) else classes
    try:
        items = list(items)
    except TypeError:
        raise YolocamError(f"{what}: expected class indices or names (e.g. [0, 2] or ['person']), "
                           f"got {classes!r}") from None
    by_name: dict[str, list[int]] = {}  # a name selects every class of that name
    for k, v in sorted(names.items()):
        by_name.setdefault(str(v).strip(), []).append(int(k))
    valid = ", ".join(f"{k}={v}" for k, v in sorted(names.items()))
    out = []
    for item in items:
        if _is_int(item):
            ids = [int(item)]
        elif isinstance(item, str):
            ids = by_name.get(item.strip()) or ([int(item)] if item.strip().isdigit() else [])
        else:
            raise YolocamError(f"{what}: expected class indices (int) or names (str), got {item!r}")
        if not ids or any(cls not in names for cls in ids):
            raise YolocamError(f"{what}: unknown class {item!r}; this model's classes are {valid}")
        out.extend(ids)
    return list(dict.fromkeys(out))


def apply_preset(preset: str | None, method, layers, fuse) -> tuple:
    """(method, layers, fuse) with a named preset (`yolocam.defaults.PRESETS`) filling the settings left at
    their defaults; an explicitly chosen method, layers or fuse wins. An unknown name is one error line."""
    from ..defaults import PRESETS, preset_settings

    if preset is None:
        return method, layers, fuse
    if preset not in PRESETS:
        raise YolocamError(f"unknown preset {preset!r}; expected one of {', '.join(PRESETS)}")
    return preset_settings(preset, method, layers, fuse)
