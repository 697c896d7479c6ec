"""Models without gradients: any format ultralytics' AutoBackend loads (ONNX, TorchScript, OpenVINO, ...).

Black-box methods (D-RISE) need only the raw predictions of a batch of images: per anchor a box
(xyxy, model-input pixels) and a class-probability vector. `raw_predictions` gives them for a
PyTorch model (through `ModelAdapter`) and `ExportedModel.raw_predictions` for an exported one,
whose raw output is (B, 4 + nc, A): xywh boxes and post-sigmoid class scores on the same anchor
axis as the PyTorch head. Detections are then selected by the same NMS (`detections.py`).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .._offline import ultralytics_offline
from ..errors import YolocamError
from ..inputs.images import Letterbox, batch_letterboxes, images_to_tensor, letterbox_params
from .adapter import HeadOutputs, ModelAdapter

# suffix (or folder ending) -> (format name, python module its runtime needs, the extra that installs it)
_FORMATS = {
    ".onnx": ("ONNX", "onnxruntime", "onnx"),
    ".torchscript": ("TorchScript", None, None),
    "_openvino_model": ("OpenVINO", "openvino", "openvino"),
}
NATIVE_SUFFIXES = (".pt", ".yaml", ".yml")


def exported_format(model) -> str | None:
    """The exported format's name when `model` is a path (or an ultralytics.YOLO) of an exported model, else None."""
    path = _exported_path(model)
    if path is None:
        return None
    for ending, (name, _, _) in _FORMATS.items():
        if str(path).rstrip("/\\").endswith(ending):
            return name
    return Path(path).suffix.lstrip(".") or Path(path).name


def _exported_path(model) -> str | None:
    if isinstance(model, (str, os.PathLike)):
        path = str(model).rstrip("/\\")
        if Path(path).suffix in NATIVE_SUFFIXES:
            return None
        return path if Path(path).suffix or path.endswith("_openvino_model") or Path(path).is_dir() else None
    inner = getattr(model, "model", None)
    if type(model).__name__ == "YOLO" and isinstance(inner, (str, os.PathLike)):
        return str(inner)  # ultralytics.YOLO("model.onnx") keeps only the path until it predicts
    return None


class ExportedModel:
    """An exported detector loaded by ultralytics' AutoBackend; the parts of `ModelAdapter` D-RISE uses."""

    end2end = False
    task = "detect"  # exported models of other tasks are refused below

    def __init__(self, model, device=None):
        path = _exported_path(model)
        if path is None or not Path(path).exists():
            raise YolocamError(f"model file not found: {path or model}")
        fmt = exported_format(path)
        for ending, (name, module, extra) in _FORMATS.items():
            if str(path).rstrip("/\\").endswith(ending) and module and importlib.util.find_spec(module) is None:
                raise YolocamError(f"a {name} model needs the {module} package: pip install 'yolocam[{extra}]' "
                                   f"(got {path})")
        ultralytics_offline()
        from ultralytics.nn.autobackend import AutoBackend

        device = torch.device(device) if device is not None else torch.device("cpu")
        try:
            self.backend = AutoBackend(path, device=device, fp16=False, verbose=False)
        except Exception as exc:
            raise YolocamError(f"cannot load {fmt} model {path}: {type(exc).__name__}: "
                               f"{' '.join(str(exc).split())}") from None
        meta = getattr(self.backend, "metadata", None) or {}
        if meta.get("task", "detect") != "detect" or meta.get("end2end") or (meta.get("args") or {}).get("nms"):
            raise YolocamError(f"expected an exported detect model with raw predictions (no NMS, not end-to-end), "
                               f"got task={meta.get('task')!r}, end2end={meta.get('end2end')}, "
                               f"nms={(meta.get('args') or {}).get('nms')} in {path}")
        self.name, self.format = str(path), fmt
        self.device = torch.device(getattr(self.backend, "device", device))
        self.dtype = torch.float32
        names = getattr(self.backend, "names", None) or meta.get("names") or {}
        self.names = dict(names) if isinstance(names, dict) else dict(enumerate(names))
        self.nc = len(self.names)
        self.stride = max(int(getattr(self.backend, "stride", 32) or 32), 32)
        imgsz = meta.get("imgsz") or [640, 640]
        self.fixed_shape = None if meta.get("dynamic") else tuple(int(v) for v in imgsz)
        self.train_imgsz = int(max(imgsz))
        self.family = "exported"

    def letterboxes(self, shapes: Sequence[tuple[int, int]], imgsz: int) -> list[Letterbox]:
        if self.fixed_shape is not None:  # a static export runs only at its own square size
            return [letterbox_params(s, max(self.fixed_shape), self.stride, auto=False) for s in shapes]
        return batch_letterboxes(shapes, imgsz, self.stride)

    def preprocess(self, images: Sequence[np.ndarray], imgsz: int) -> tuple[torch.Tensor, list[Letterbox]]:
        lbs = self.letterboxes([im.shape[:2] for im in images], imgsz)
        return images_to_tensor(images, lbs, self.device, torch.float32), lbs

    @torch.no_grad()
    def raw_predictions(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(boxes (B, A, 4) xyxy input pixels, class probabilities (B, A, nc)) of a batch."""
        y = self.backend(x)
        y = y[0] if isinstance(y, (list, tuple)) else y
        y = torch.as_tensor(y, device=x.device).float()
        if y.ndim != 3 or y.shape[1] != 4 + self.nc:
            raise YolocamError(f"expected raw predictions of shape (B, {4 + self.nc}, A) from {self.name}, "
                               f"got {tuple(y.shape)}")
        xywh, probs = y[:, :4].transpose(1, 2), y[:, 4:].transpose(1, 2)
        half = xywh[..., 2:] / 2
        return torch.cat((xywh[..., :2] - half, xywh[..., :2] + half), -1), probs


def raw_predictions(model, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw boxes and class probabilities of a batch for a `ModelAdapter` or an `ExportedModel`."""
    if isinstance(model, ExportedModel):
        return model.raw_predictions(x)
    with torch.no_grad():
        head = model.forward(x.to(model.dtype))[1]
    return head.boxes.float(), head.logits.float().sigmoid()


def head_from_raw(boxes: torch.Tensor, probs: torch.Tensor, strides: Sequence[float] = (8, 16, 32),
                  size: tuple[int, int] | None = None) -> HeadOutputs:
    """`HeadOutputs` for `select_detections` from raw predictions (logits from the probabilities; levels from
    the anchor count when it matches `strides` on an input of `size`, else all 0)."""
    n = boxes.shape[1]
    levels = torch.zeros(n, dtype=torch.long, device=boxes.device)
    if size is not None:
        counts = [(size[0] // int(s)) * (size[1] // int(s)) for s in strides]
        if sum(counts) == n:
            levels = torch.repeat_interleave(torch.arange(len(counts), device=boxes.device),
                                             torch.tensor(counts, device=boxes.device))
    logits = torch.logit(probs.clamp(1e-7, 1 - 1e-7))
    empty = boxes.new_zeros((n, 2))
    return HeadOutputs(logits, boxes, empty[:, 0], empty, levels)


def is_native(model) -> bool:
    """True for a model yolocam explains with gradients (a `ModelAdapter` can wrap it)."""
    return isinstance(model, ModelAdapter) or exported_format(model) is None
