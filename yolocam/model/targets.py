"""Targets: a detection and the head's raw outputs -> one scalar to differentiate.

The engine replays the network with one batch row ("copy") per (detection, component)
job, so built-in targets are vectorised over copies: `target(outputs, jobs) -> (n,)`,
where row k of `outputs` belongs to job k. A target with several components (`box`:
x1, y1, x2, y2) gets one job per component; their maps are max-combined.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from ..errors import YolocamError
from .adapter import HeadOutputs
from .detections import Detection
from .pose import resolve_keypoint


@dataclass
class Jobs:
    """n jobs: per job the detection, its anchor (n,), class (n,), box (n, 4) and component (n,); `versus`
    (n,): the contrasted class of contrastive targets (`contrast.py`), None when the detections carry none."""

    detections: list[Detection]
    anchor: torch.Tensor
    cls: torch.Tensor
    box: torch.Tensor
    component: torch.Tensor
    versus: torch.Tensor | None = None

    @classmethod
    def build(cls, detections: Sequence[Detection], components: Sequence[int], device) -> "Jobs":
        dets = list(detections)
        as_t = lambda v, dt=torch.long: torch.tensor(v, device=device, dtype=dt)  # noqa: E731
        return cls(
            dets,
            as_t([d.anchor for d in dets]),
            as_t([d.cls for d in dets]),
            as_t([d.box for d in dets], torch.float32).view(-1, 4),
            as_t(list(components)),
            None if any(d.versus is None for d in dets) or not dets else as_t([d.versus for d in dets]),
        )


class Target:
    """Base: `n_components` jobs per detection; `__call__(outputs, jobs) -> (n,)` scalars."""

    name = "target"
    n_components = 1
    local = False  # True when the scalar reads only the detection's own anchor (so only its level)
    needs_boxes = True  # False when it reads only class scores (the head's box branch is then skipped)
    needs_masks = False  # True when it reads the mask coefficients and prototypes (segmentation heads)

    def __call__(self, outputs: HeadOutputs, jobs: Jobs) -> torch.Tensor:
        raise NotImplementedError


def _rows(outputs: HeadOutputs, jobs: Jobs) -> torch.Tensor:
    return torch.arange(len(jobs.detections), device=outputs.logits.device)


def _coordinate(outputs: HeadOutputs, jobs: Jobs, which: torch.Tensor) -> torch.Tensor:
    """Box coordinate `which` (0..3: x1, y1, x2, y2) at each job's anchor, in grid units (pixels / stride)."""
    coord = outputs.boxes[_rows(outputs, jobs), jobs.anchor, which]
    return coord / outputs.strides[jobs.anchor]


class ClassLogit(Target):
    """Pre-sigmoid logit of the detected class at the detection's anchor (the default)."""

    name = "class"
    local = True
    needs_boxes = False

    def __call__(self, outputs, jobs):
        return outputs.logits[_rows(outputs, jobs), jobs.anchor, jobs.cls]


class Confidence(Target):
    """Post-sigmoid score of the detected class at its anchor (saturates near 1)."""

    name = "conf"
    local = True
    needs_boxes = False

    def __call__(self, outputs, jobs):
        return outputs.logits[_rows(outputs, jobs), jobs.anchor, jobs.cls].sigmoid()


class BoxCoordinates(Target):
    """One decoded coordinate (x1, y1, x2, y2) per job, in stride-normalised (grid) units."""

    name = "box"
    local = True
    n_components = 4

    def __call__(self, outputs, jobs):
        return _coordinate(outputs, jobs, jobs.component)


class ClassAndBox(Target):
    """Component 0: class logit; 1..4: box coordinates (ODAM-style, max-combined maps)."""

    name = "all"
    local = True
    n_components = 5

    def __call__(self, outputs, jobs):
        logit = outputs.logits[_rows(outputs, jobs), jobs.anchor, jobs.cls]
        return torch.where(jobs.component == 0, logit, _coordinate(outputs, jobs, (jobs.component - 1).clamp(min=0)))


class RotatedBoxCoordinates(BoxCoordinates):
    """OBB `box`: centre x, centre y, width, height (grid units) and angle (radians) of the rotated box."""

    n_components = 5

    def __call__(self, outputs, jobs):
        return _rotated_coordinate(outputs, jobs, jobs.component)


class ClassAndRotatedBox(ClassAndBox):
    """OBB `all`: component 0 the class logit, 1..5 the rotated box's cx, cy, w, h, angle."""

    n_components = 6

    def __call__(self, outputs, jobs):
        logit = outputs.logits[_rows(outputs, jobs), jobs.anchor, jobs.cls]
        box = _rotated_coordinate(outputs, jobs, (jobs.component - 1).clamp(min=0))
        return torch.where(jobs.component == 0, logit, box)


def _rotated_coordinate(outputs: HeadOutputs, jobs: Jobs, which: torch.Tensor) -> torch.Tensor:
    """Rotated-box component `which` (0..4: cx, cy, w, h in grid units; 4: angle in radians) at each anchor."""
    value = outputs.rboxes[_rows(outputs, jobs), jobs.anchor, which]
    return torch.where(which == 4, value, value / outputs.strides[jobs.anchor])


class Keypoints(Target):
    """Pose: `keypoint:K` explains keypoint K's x, y (grid units: pixels / stride) and visibility logit (D = 3
    components, max-combined; D = 2 for models without visibility); `keypoints` all K keypoints (D K
    components). K: an index or a keypoint name, resolved against the model's names by `for_task`."""

    local = True  # reads the keypoint branch at the detection's own anchor

    def __init__(self, spec: str | None = None, index: int | None = None, k: int | None = None, dims: int = 3):
        self.spec, self.index, self.k, self.dims = spec, index, k, dims
        self.name = "keypoints" if spec is None else f"keypoint:{spec}"
        self.n_components = dims if spec is not None or k is None else dims * k

    def bind(self, names: list[str], dims: int = 3) -> "Keypoints":
        """This target resolved against a pose model's keypoint names (YolocamError for an unknown keypoint)."""
        index = None if self.spec is None else resolve_keypoint(self.spec, names)
        return Keypoints(self.spec, index, len(names), dims)

    def __call__(self, outputs, jobs):
        if outputs.keypoints is None or self.k is None:
            raise YolocamError(f"target {self.name!r} needs a pose model's keypoints")
        kp = jobs.component // self.dims if self.index is None else torch.full_like(jobs.component, self.index)
        dim = jobs.component % self.dims
        value = outputs.keypoints[_rows(outputs, jobs), jobs.anchor, kp, dim]
        return torch.where(dim < 2, value / outputs.strides[jobs.anchor], value)


class MaskLogits(Target):
    """Segmentation: the mean mask logit (prototypes x the anchor's coefficients) over the instance's own
    predicted mask (logit > 0 inside its box, at prototype resolution; `segment.mask_logit_mean`).

    Not local: the prototypes are computed from the finest level (all levels for 26).
    """

    name = "mask"
    needs_boxes = False  # reads the detection's kept box (`jobs.box`), not the decoded ones
    needs_masks = True

    def __call__(self, outputs, jobs):
        from .segment import mask_logit_mean

        if outputs.protos is None:
            raise YolocamError("target 'mask' needs a segmentation model (a Segment head, e.g. yolov8n-seg, "
                               "yolo11n-seg, yolo26n-seg)")
        rows = _rows(outputs, jobs)
        scale = 2.0 / float(outputs.strides.min())  # prototypes: half the finest stride, 1/4 of the input
        return mask_logit_mean(outputs.coeffs[rows, jobs.anchor], outputs.protos[rows], jobs.box, scale)


class ClassifyLogit(ClassLogit):
    """Classification models: the class's pre-softmax logit of the one image-level prediction (not local:
    it pools the whole image)."""

    local = False


class ClassProbability(Confidence):
    """Classification models' `conf`: the class's softmax probability (saturates near 1)."""

    local = False

    def __call__(self, outputs, jobs):
        rows = _rows(outputs, jobs)
        return outputs.logits[rows, jobs.anchor].softmax(-1)[rows, jobs.cls]


def for_task(target: Target, task: str, keypoint_names: list[str] | None = None, keypoint_dims: int = 3) -> Target:
    """The built-in target's variant for a model's task: on OBB models `box` and `all` read the rotated box;
    keypoint targets are resolved against a pose model's `keypoint_names`; `mask` and keypoint targets are
    refused (YolocamError) on models without masks or keypoints; classification models take `class` (the
    logit), `conf` (the softmax probability) and callables only."""
    if task == "classify":
        if type(target) in (ClassifyLogit, ClassProbability):  # already this task's variant (e.g. an engine copy)
            return target
        if type(target) in (ClassLogit, Confidence):
            return ClassifyLogit() if type(target) is ClassLogit else ClassProbability()
        if not isinstance(target, CallableTarget) and not target.name.startswith("contrast"):
            raise YolocamError(f"target {target.name!r} needs boxes, masks or keypoints, which a classification "
                               f"model does not predict; expected 'class', 'conf' or a callable")
        return target
    if isinstance(target, Keypoints):
        if task != "pose" or not keypoint_names:
            raise YolocamError(f"target {target.name!r} needs a pose model (a Pose head); this model's task is {task}")
        return target.bind(keypoint_names, keypoint_dims)
    if isinstance(target, MaskLogits) and task != "segment":
        raise YolocamError(f"target {target.name!r} needs a segmentation model (yolov8n-seg, yolo11n-seg, "
                           f"yolo26n-seg ...); this model's task is {task!r}")
    if task == "obb" and type(target) in (BoxCoordinates, ClassAndBox):
        return RotatedBoxCoordinates() if type(target) is BoxCoordinates else ClassAndRotatedBox()
    return target


class Cluster(Target):
    """The detected class's score summed over all raw predictions overlapping the box, IoU-weighted."""

    name = "cluster"

    def __call__(self, outputs, jobs):
        rows = _rows(outputs, jobs)
        scores = outputs.logits[rows, :, jobs.cls].sigmoid()  # (n, A)
        weights = batched_iou(outputs.boxes.detach(), jobs.box.to(outputs.boxes.dtype))  # (n, A)
        return (weights * scores).sum(1)


def batched_iou(boxes: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """IoU of boxes (n, A, 4) with one reference box per row ref (n, 4) -> (n, A); xyxy."""
    r = ref[:, None, :]
    lt = torch.maximum(boxes[..., :2], r[..., :2])
    rb = torch.minimum(boxes[..., 2:], r[..., 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area = lambda b: (b[..., 2:] - b[..., :2]).clamp(min=0).prod(-1)  # noqa: E731
    return inter / (area(boxes) + area(r) - inter).clamp(min=1e-9)


class CallableTarget(Target):
    """Wraps a user callable `(outputs, detection) -> scalar tensor`; called once per job."""

    needs_masks = True  # segmentation models: the callable may read `coeffs` and `protos`

    def __init__(self, fn: Callable[[HeadOutputs, Detection], torch.Tensor]):
        self.fn = fn
        self.name = getattr(fn, "__name__", type(fn).__name__)

    def __call__(self, outputs, jobs):
        values = []
        live = outputs.logits.requires_grad or outputs.boxes.requires_grad  # replayed with autograd
        for k, det in enumerate(jobs.detections):
            v = self.fn(outputs[k], det)
            if not isinstance(v, torch.Tensor) or v.numel() != 1:
                raise YolocamError(
                    f"target callable {self.name!r} must return a scalar tensor, got "
                    f"{type(v).__name__}{tuple(v.shape) if isinstance(v, torch.Tensor) else ''}"
                )
            if live and v.grad_fn is None:  # a constant, detached, or a new leaf: not computed from `outputs`
                raise YolocamError(
                    f"target callable {self.name!r} returned a tensor that does not depend on the model's outputs "
                    f"(a constant, or computed under no_grad or from .detach()/.item()); it must return a scalar "
                    f"computed from `outputs.logits` or `outputs.boxes` with autograd"
                )
            values.append(v.reshape(()))
        return torch.stack(values)


TARGETS: dict[str, type[Target]] = {t.name: t for t in (ClassLogit, Confidence, BoxCoordinates, ClassAndBox, Cluster,
                                                          MaskLogits)}


# Parametrised target families defined in their own modules: name -> parser of "name[:PARAM]". Filled when
# the module is imported (`yolocam.model` imports them), so this module never imports them back.
PARAMETRISED: dict[str, Callable[[str], Target]] = {}


def list_targets() -> list[str]:
    """Built-in target names (plus the parametrised `contrast:CLASS`, `keypoint:K`)."""
    return list(TARGETS) + ["contrast"]


def get_target(spec) -> Target:
    """A target from a name in `list_targets()`, a Target instance, or a callable."""
    if isinstance(spec, Target):
        return spec
    if isinstance(spec, str):
        family = spec.partition(":")[0].strip()
        if family in PARAMETRISED:  # contrast, contrast:CLASS (`contrast.py` registers itself)
            return PARAMETRISED[family](spec)
        if spec == "keypoints" or spec.startswith("keypoint:"):
            key = spec.partition(":")[2].strip()
            if spec != "keypoints" and not key:
                raise YolocamError("target 'keypoint:' needs a keypoint index or name, e.g. keypoint:0 or keypoint:nose")
            return Keypoints(key or None)
        if spec not in TARGETS:
            raise YolocamError(f"unknown target {spec!r}; expected one of {', '.join(TARGETS)}, contrast, "
                               f"contrast:CLASS, keypoint:K, keypoints (pose models) or a callable")
        return TARGETS[spec]()
    if callable(spec):
        return CallableTarget(spec)
    raise YolocamError(f"target: expected a name ({', '.join(TARGETS)}) or a callable, got {type(spec).__name__}")
