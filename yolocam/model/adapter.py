"""The adapter: one ultralytics detection model, its anatomy, and how to run it.

It knows the family (v5u ... 26), the head kind (NMS or end-to-end), strides and levels,
the letterbox, and runs the layers itself so that any stretch of the network can be
replayed with gradients (see `engine.py`). It never calls `.train()`/`.eval()` on an
`ultralytics.YOLO` wrapper, only on the inner `nn.Module`, and restores what it changes.
"""

from __future__ import annotations

import contextlib
import os
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from .._offline import ultralytics_offline
from ..errors import YolocamError
from ..inputs.images import Letterbox, batch_letterboxes, images_to_tensor
from . import classify, obb, pose, segment
from .checkpoint import load_checkpoint_module
from .unsupported import module_types, refuse_unsupported, yaml_module_types

FAMILIES = ("v5u", "v8", "v9", "v10", "11", "12", "26")
SUPPORTED_HEADS = ("Detect", "v10Detect", "Segment", "Pose", "Segment26", "Pose26") + obb.OBB_HEADS

# Module types that only route tensors in a neck (upsampling, concatenation, stride-2 convs).
_NECK_PLUMBING = ("Upsample", "Concat", "Conv", "ADown", "AConv", "SCDown", "Index", "DWConv")

ultralytics_offline()  # before any model is loaded: no hub, no telemetry

_MODEL_LOCKS: "weakref.WeakKeyDictionary[nn.Module, threading.RLock]" = weakref.WeakKeyDictionary()
_MODEL_LOCKS_GUARD = threading.Lock()


def model_lock(module: nn.Module) -> threading.RLock:
    """The one re-entrant lock of an inner `nn.Module`, shared by every adapter on it (kept while the module lives)."""
    with _MODEL_LOCKS_GUARD:
        lock = _MODEL_LOCKS.get(module)
        if lock is None:
            lock = _MODEL_LOCKS[module] = threading.RLock()
        return lock


@dataclass
class HeadOutputs:
    """Raw head outputs for a batch, on the flattened prediction (anchor) axis.

    logits: (B, A, nc) pre-sigmoid class scores.
    boxes:  (B, A, 4) decoded xyxy boxes in model-input (letterbox) pixels.
    strides: (A,) stride in pixels of each anchor; anchors: (A, 2) cell centres in grid units.
    levels: (A,) level index of each anchor (0 = finest).
    rboxes: OBB heads only (else None): (B, A, 5) rotated boxes cx, cy, w, h (letterbox pixels) and
        angle (radians), as ultralytics decodes them; `boxes` then holds their axis-aligned hulls.
    coeffs: Segment heads only (else None): (B, A, nm) mask coefficients of each anchor.
    protos: Segment heads only (else None): (B, nm, h, w) mask prototypes at 1/4 of the input size.
    keypoints: pose heads only (else None): (B, A, K, 3) x, y (letterbox pixels) and visibility logit
        (pre-sigmoid) of each anchor's keypoints (`pose.py`).
    softmax: classification heads (`classify.py`): one anchor per image, `logits` pre-softmax, `boxes` the input.
    """

    logits: torch.Tensor
    boxes: torch.Tensor
    strides: torch.Tensor
    anchors: torch.Tensor
    levels: torch.Tensor
    rboxes: torch.Tensor | None = None
    coeffs: torch.Tensor | None = None
    protos: torch.Tensor | None = None
    keypoints: torch.Tensor | None = None
    softmax: bool = False

    @property
    def angles(self) -> torch.Tensor | None:
        """(B, A) angle of each anchor's rotated box in radians (OBB heads), else None."""
        return None if self.rboxes is None else self.rboxes[..., 4]

    def __getitem__(self, index) -> "HeadOutputs":
        """Select batch rows (keeps the batch axis for an int index)."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        rboxes = None if self.rboxes is None else self.rboxes[index]
        coeffs = None if self.coeffs is None else self.coeffs[index]
        protos = None if self.protos is None else self.protos[index]
        kpts = None if self.keypoints is None else self.keypoints[index]
        return HeadOutputs(self.logits[index], self.boxes[index], self.strides, self.anchors, self.levels, rboxes,
                           coeffs, protos, keypoints=kpts, softmax=self.softmax)


def _load_module(model) -> tuple[nn.Module, object | None, str]:
    """Return (inner nn.Module, ultralytics.YOLO wrapper or None, a name for the manifest)."""
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if path.suffix in (".yaml", ".yml"):
            bundled = not path.exists() and os.sep not in str(model)  # an ultralytics config name, e.g. yolov8n.yaml
            if not path.exists() and not bundled:
                raise YolocamError(f"model config not found: {path}")
            refuse_unsupported(yaml_module_types(path), str(path))
            try:
                return classify.model_class(path)(str(path), verbose=False), None, str(path)
            except FileNotFoundError:
                raise YolocamError(f"model config not found: {model} is neither a file here nor a config that "
                                   f"ultralytics ships (such as yolov8n.yaml, yolo11n.yaml, yolo26n.yaml)") from None
            except Exception as exc:  # a broken YAML or an unknown module in it
                raise YolocamError(f"cannot build a model from {model}: {type(exc).__name__}: "
                                   f"{' '.join(str(exc).split())}") from None
        return load_checkpoint_module(model), None, os.fspath(model)  # exactly the named file (`checkpoint.py`)
    inner = getattr(model, "model", None)
    if isinstance(inner, nn.Module) and any(c.__name__ == "Model" for c in type(model).__mro__):
        name = getattr(model, "ckpt_path", None) or getattr(model, "model_name", None) or type(inner).__name__
        return inner, model, str(name)
    if isinstance(model, nn.Module):
        return model, None, type(model).__name__
    raise YolocamError(
        f"model: expected a checkpoint path, an ultralytics.YOLO or a DetectionModel, got {type(model).__name__}"
    )


def _guess_family(module: nn.Module, head: nn.Module) -> str:
    yaml_file = str(getattr(module, "yaml", {}).get("yaml_file", "") or "").lower()
    name = Path(yaml_file).stem
    for prefix, fam in (("yolov5", "v5u"), ("yolov8", "v8"), ("yolov9", "v9"), ("yolov10", "v10"),
                        ("yolo11", "11"), ("yolo12", "12"), ("yolo26", "26")):
        if name.startswith(prefix):
            return fam
    types = {type(m).__name__ for m in module.modules()}
    if type(head).__name__ == "v10Detect":
        return "v10"
    if getattr(head, "reg_max", 16) == 1 and getattr(head, "one2one_cv2", None) is not None:
        return "26"
    if "A2C2f" in types:
        return "12"
    if "C3k2" in types:
        return "11"
    if "RepNCSPELAN4" in types:
        return "v9"
    if "C2f" in types:
        return "v8"
    if "C3" in types:
        return "v5u"
    return "unknown"


class ModelAdapter:
    """Wraps a detection model; see the module docstring.

    Args:
        model: checkpoint path (.pt), model YAML, `ultralytics.YOLO`, `DetectionModel` (or `ClassificationModel`).
        device: None keeps the model's device; otherwise the model is moved there.
        end2end: None uses the one-to-one branch when the head has one; False forces NMS on one-to-many.
    """

    def __init__(self, model, device: str | torch.device | None = None, end2end: bool | None = None):
        module, wrapper, name = _load_module(model)
        refuse_unsupported(module_types(module), name)
        self.module, self.wrapper, self.name = module, wrapper, name
        layers = getattr(module, "model", None)
        if not isinstance(layers, nn.Sequential) or len(layers) == 0:
            raise YolocamError(f"not an ultralytics YOLO model: {type(module).__name__} has no layer sequence")
        head = layers[-1]
        cls_head = classify.is_classify(head)  # a classification model: one image-level prediction
        if not cls_head and (type(head).__name__ not in SUPPORTED_HEADS or not hasattr(head, "cv3")):
            raise YolocamError(
                f"not a detection model: its last layer is {type(head).__name__}, expected a Detect head "
                f"(one of {', '.join(SUPPORTED_HEADS)}) or a Classify head"
            )
        self.layers: nn.Sequential = layers
        self.head = head
        has_one2one = getattr(head, "one2one_cv3", None) is not None
        self.end2end = has_one2one if end2end is None else bool(end2end and has_one2one)
        if not self.end2end and getattr(head, "cv3", None) is None and not cls_head:
            self.end2end = True  # fused end-to-end model: only the one-to-one branch is left
        if device is not None:
            self.module.to(device)
        param = next(self.module.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.family = _guess_family(module, head)
        self.nc = classify.num_classes(head) if cls_head else int(head.nc)
        names = getattr(module, "names", None) or {i: str(i) for i in range(self.nc)}
        self.names = dict(names) if isinstance(names, dict) else dict(enumerate(names))
        self.strides = [32.0] if cls_head else [float(s) for s in head.stride]  # classify: measured below
        self.stride = max(int(max(self.strides)), 32)
        self.head_inputs = layer_inputs(head.f, len(layers) - 1)
        yaml = getattr(module, "yaml", None) or {}
        self.n_backbone = len(yaml.get("backbone", [])) or min(self.head_inputs)
        self.train_imgsz = _train_imgsz(module)
        self._layer_strides: list[int] | None = None
        if cls_head:
            self.strides = [float(self.layer_strides()[self.head_inputs[0]])]

    # ----------------------------------------------------------------- anatomy
    @property
    def head_kind(self) -> str:
        return "end2end" if self.end2end else "nms"

    @property
    def task(self) -> str:
        """`obb` for oriented-box heads, `segment` for Segment heads, `pose` for pose heads, `classify` for
        Classify heads, else `detect`."""
        if classify.is_classify(self.head):
            return "classify"
        if obb.is_obb(self.head):
            return "obb"
        if segment.is_segment(self.head):
            return "segment"
        return "pose" if pose.is_pose(self.head) else "detect"

    @property
    def keypoint_names(self) -> list[str] | None:
        """Pose models: the name of each keypoint (`pose.keypoint_names`), else None."""
        return pose.keypoint_names(self.module, self.head.kpt_shape[0]) if pose.is_pose(self.head) else None

    def layer_groups(self) -> dict[str, list[int]]:
        """Indices of `self.layers` for the named layer sets `fine`, `backbone`, `neck`, `head`.

        `fine` is the backbone's last stride-4 layer (its finest stage, below every head level); a
        model without one gets the finest layer under the head's finest stride instead.
        """
        if classify.is_classify(self.head):
            return classify.layer_groups(self.layer_strides(), self.head_inputs)
        last = len(self.layers) - 1
        neck = [
            i for i in range(self.n_backbone, last) if type(self.layers[i]).__name__ not in _NECK_PLUMBING
        ]
        consumed = {j for i in range(self.n_backbone, last + 1) for j in layer_inputs(self.layers[i].f, i)}
        backbone = sorted(j for j in consumed if 0 <= j < self.n_backbone)
        return {"fine": self._fine_layers(backbone), "backbone": backbone, "neck": neck, "head": list(self.head_inputs)}

    def _fine_layers(self, backbone: list[int]) -> list[int]:
        strides = self.layer_strides()
        below = [i for i in range(1, self.n_backbone) if 1 < strides[i] < min(self.strides)]
        at4 = [i for i in below if strides[i] == 4]
        if at4 or below:
            return [(at4 or [i for i in below if strides[i] == min(strides[j] for j in below)])[-1]]
        return backbone[:1]

    def layer_strides(self) -> list[int]:
        """Output stride in pixels of each layer before the head (from one 2x-max-stride probe, cached)."""
        if self._layer_strides is None:
            size = 2 * self.stride
            probe = torch.zeros(1, 3, size, size, device=self.device, dtype=self.dtype)
            with self.explaining(), torch.no_grad():
                outputs = self.run_layers(probe, [None] * len(self.layers))
            widths = [_width(o) for o in outputs[:-1]]
            self._layer_strides = [size // w if w else 0 for w in widths]
        return self._layer_strides

    # ------------------------------------------------------------ preprocessing
    def letterboxes(self, shapes: Sequence[tuple[int, int]], imgsz: int) -> list[Letterbox]:
        """Letterbox geometry per image (minimal rectangles only when all shapes agree), or centre crops for
        classification models: as ultralytics' predictors."""
        return batch_letterboxes(shapes, imgsz, self.stride, crop=self.task == "classify")

    def preprocess(self, images: Sequence[np.ndarray], imgsz: int) -> tuple[torch.Tensor, list[Letterbox]]:
        """BGR uint8 images -> (B, 3, H, W) RGB float tensor in [0, 1] on the model's device."""
        lbs = self.letterboxes([im.shape[:2] for im in images], imgsz)
        return images_to_tensor(images, lbs, self.device, self.dtype), lbs

    # ------------------------------------------------------------------ running
    def run_layers(self, x: torch.Tensor | None, outputs: list, start: int = 0, only: set[int] | None = None) -> list:
        """Run layers `start` .. head-1 (those in `only`, when given), filling `outputs[i]` with each output.

        `outputs` holds earlier layers' outputs (entries < start) when replaying; `x` is the
        input image batch when `start == 0`. Returns `outputs`.
        """
        for i in range(start, len(self.layers) - 1):
            if only is not None and i not in only:
                continue
            m = self.layers[i]
            if i == 0:
                inp = x
            else:
                sources = [outputs[j] for j in layer_inputs(m.f, i)]
                inp = sources[0] if isinstance(m.f, int) else sources
            outputs[i] = m(inp)
        return outputs

    def head_outputs(self, outputs: list, level: int | None = None, boxes: bool = True,
                     masks: bool = True) -> HeadOutputs:
        """Evaluate the head branch in use on the layer outputs; see `HeadOutputs`.

        With `level`, only that level's branches run; the other levels' raw outputs are zeros
        (for targets that read only anchors of that level: their values there are not meaningful).
        With `boxes=False` the box branches are skipped and the boxes are zeros (class-only targets).
        Segment heads also give `coeffs` and `protos` (`segment.py`) unless `masks=False`.
        """
        if classify.is_classify(self.head):  # one image-level prediction (`classify.py`)
            out = classify.head_outputs(self.head, [outputs[j] for j in self.head_inputs], self.strides[0])
            return HeadOutputs(*out, softmax=True)
        head_out = self._head_outputs(outputs, level, boxes)
        if masks and segment.is_segment(self.head):
            feats = [outputs[j] for j in self.head_inputs]
            head_out.coeffs, head_out.protos = segment.mask_outputs(self.head, feats, self.end2end)
        return head_out

    def _head_outputs(self, outputs: list, level: int | None, boxes: bool) -> HeadOutputs:
        feats = [outputs[j] for j in self.head_inputs]
        head = self.head
        box_head = head.one2one_cv2 if self.end2end else head.cv2
        cls_head = head.one2one_cv3 if self.end2end else head.cv3

        def run(branch, i, f, channels):
            if level is None or i == level:
                return branch[i](f).flatten(2)
            return f.new_zeros((f.shape[0], channels, f.shape[-2] * f.shape[-1]))

        cls = torch.cat([run(cls_head, i, f, self.nc) for i, f in enumerate(feats)], dim=-1)  # (B, nc, A)
        anchors, strides, levels = self._anchor_grid(feats)
        angle_head = obb.angle_branch(head, self.end2end)
        kpt_head = pose.keypoint_branch(head, self.end2end)
        kpts = None
        if not boxes:
            n, a = cls.shape[0], cls.shape[2]
            rboxes = None if angle_head is None else cls.new_zeros((n, a, 5))
            kpts = None if kpt_head is None else cls.new_zeros((n, a, *head.kpt_shape))
            return HeadOutputs(cls.transpose(1, 2), cls.new_zeros((n, a, 4)), strides, anchors, levels, rboxes,
                               keypoints=kpts)
        if kpt_head is not None:  # keypoints (`pose.py`)
            raw = torch.cat([run(kpt_head, i, f, head.nk) for i, f in enumerate(feats)], dim=-1)  # (B, K*D, A)
            kpts = pose.decode_keypoints(head, raw, anchors, strides)
        box = torch.cat([run(box_head, i, f, 4 * head.reg_max) for i, f in enumerate(feats)], dim=-1)  # (B, 4*reg_max, A)
        dist = head.dfl(box) if head.reg_max > 1 else box  # (B, 4, A) ltrb in grid units
        centre = anchors.t().unsqueeze(0)  # (1, 2, A)
        if angle_head is not None:  # oriented boxes (`obb.py`)
            raw = torch.cat([run(angle_head, i, f, head.ne) for i, f in enumerate(feats)], dim=-1)[:, 0]  # (B, A)
            rboxes, hulls = obb.decode_rboxes(dist, obb.decode_angle(head, raw), centre, strides)
            return HeadOutputs(cls.transpose(1, 2), hulls, strides, anchors, levels, rboxes)
        xyxy = torch.cat((centre - dist[:, :2], centre + dist[:, 2:]), dim=1) * strides
        return HeadOutputs(cls.transpose(1, 2), xyxy.transpose(1, 2), strides, anchors, levels, keypoints=kpts)

    def _anchor_grid(self, feats: list[torch.Tensor]):
        points, strides, levels = [], [], []
        for lvl, (f, s) in enumerate(zip(feats, self.strides)):
            h, w = f.shape[-2:]
            ys, xs = torch.meshgrid(
                torch.arange(h, device=f.device, dtype=f.dtype) + 0.5,
                torch.arange(w, device=f.device, dtype=f.dtype) + 0.5,
                indexing="ij",
            )
            points.append(torch.stack((xs, ys), -1).view(-1, 2))
            strides.append(torch.full((h * w,), s, device=f.device, dtype=f.dtype))
            levels.append(torch.full((h * w,), lvl, device=f.device, dtype=torch.long))
        return torch.cat(points), torch.cat(strides), torch.cat(levels)

    def forward(self, x: torch.Tensor) -> tuple[list, HeadOutputs]:
        """Full forward of a batch: every layer's output and the head outputs."""
        outputs = self.run_layers(x, [None] * len(self.layers))
        return outputs, self.head_outputs(outputs)

    # ------------------------------------------------------------ model state
    @property
    def lock(self) -> threading.RLock:
        """The model's lock (`model_lock`): every adapter on the same inner module shares it."""
        return model_lock(self.module)

    @contextlib.contextmanager
    def explaining(self) -> Iterator[None]:
        """Eval mode and frozen parameters for the duration; the model's own state is restored after.

        Holds the model's lock meanwhile (re-entrant), so explanations of one model from several
        threads run one at a time, each seeing and restoring the state the caller left.
        """
        with self.lock:
            modes = [(m, m.training) for m in self.module.modules()]
            flags = [(p, p.requires_grad) for p in self.module.parameters()]
            try:
                self.module.eval()
                for p, _ in flags:
                    p.requires_grad_(False)
                yield
            finally:
                for p, flag in flags:
                    p.requires_grad_(flag)
                for m, mode in modes:
                    m.training = mode


def _width(out) -> int:
    """Spatial width of a layer output (a tensor, or the first tensor of a list/tuple); 0 if none."""
    if isinstance(out, torch.Tensor):
        return int(out.shape[-1]) if out.dim() == 4 else 0
    if isinstance(out, (list, tuple)) and out:
        return _width(out[0])
    return 0


def layer_inputs(f, i: int) -> list[int]:
    """Absolute indices of the layers that layer `i` reads, from its `from` field `f` (an int or a list);
    a negative index counts back from layer `i` (-1 the layer before it, -2 the one before that), as in
    ultralytics' own forward pass."""
    items = [f] if isinstance(f, int) else list(f)
    return [i + j if j < 0 else j for j in items]


def _train_imgsz(module: nn.Module) -> int | None:
    """The image size the checkpoint was trained at (ultralytics attaches its train args), if known."""
    args = getattr(module, "args", None)
    size = args.get("imgsz") if isinstance(args, dict) else getattr(args, "imgsz", None)
    if isinstance(size, (list, tuple)) and size:
        size = max(size)
    return int(size) if isinstance(size, (int, float)) and size >= 32 else None
