"""Detections kept after NMS (or the end-to-end top-k), each tied to its raw prediction.

A `Detection` remembers the index of the raw prediction (`anchor`, on the head's flattened
prediction axis) it came from and that prediction's `level`, so a target can read the
exact score that survived.

Its instance data is in model-input (letterbox) pixels; `instance_data_to_original` maps it to the
original image, each task by its own module's `instance_fields(dets, lb, masks)` (one signature):
the box here, classification's whole-image box, OBB's rotated box, corners and hull, pose's keypoints,
segmentation's masks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torchvision

from ..inputs.images import Letterbox
from . import classify, obb, pose, segment
from .adapter import HeadOutputs
from .classify import top_classes
from .obb import rotated_nms

MAX_WH = 7680  # per-class box offset (pixels) that keeps classes apart in one NMS call


@dataclass(frozen=True)
class Detection:
    """One kept box. `box` is xyxy in model-input (letterbox) pixels; `image` indexes the batch.

    `rbox` (OBB heads only, else None): the rotated box cx, cy, w, h (letterbox pixels), angle
    (radians); `box` is then its axis-aligned hull.
    `keypoints` (pose heads only, else None): K rows of x, y (letterbox pixels), visibility score (sigmoid).
    `versus` (contrastive targets only, else None): the other class, fixed when the detection is selected.
    """

    image: int
    anchor: int
    level: int
    cls: int
    conf: float
    box: tuple[float, float, float, float]
    rbox: tuple[float, float, float, float, float] | None = None
    keypoints: tuple[tuple[float, ...], ...] | None = None
    versus: int | None = None  # contrastive targets: the class the detected one is contrasted with (`contrast.py`)


@dataclass(frozen=True)
class InstanceData:
    """One detection's instance data in original-image pixels, as `DetectionExplanation` holds it: `box`
    xyxy (clipped to the image), and per task `rbox` + `polygon` (OBB), `keypoints` (pose) or
    `instance_mask` (segmentation, a `segment.InstanceMask`); None where the task has none."""

    box: list[float]
    rbox: list[float] | None = None
    polygon: list[list[float]] | None = None
    keypoints: list[list[float]] | None = None
    instance_mask: object | None = None


def instance_fields(dets: Sequence[Detection], lb: Letterbox, masks=None) -> dict[str, list]:
    """Plain detections' instance data in original-image pixels: each box xyxy, unpadded, divided by the
    letterbox gain and clipped to the image. The other tasks' `instance_fields` add to it or replace it."""
    gx, gy = lb.gain_xy
    boxes = torch.tensor([d.box for d in dets], dtype=torch.float32).view(-1, 4)
    boxes[:, [0, 2]] = ((boxes[:, [0, 2]] - lb.left) / gx).clamp(0, lb.orig_shape[1])
    boxes[:, [1, 3]] = ((boxes[:, [1, 3]] - lb.top) / gy).clamp(0, lb.orig_shape[0])
    return {"box": boxes.tolist()}


TASK_INSTANCES = {"detect": instance_fields, "classify": classify.instance_fields, "obb": obb.instance_fields,
                  "pose": pose.instance_fields, "segment": segment.instance_fields}


def instance_data_to_original(task: str, dets: Sequence[Detection], lb: Letterbox, masks=None) -> list[InstanceData]:
    """Per detection of one image its `InstanceData` in the original image of letterbox `lb`: the plain box,
    then what the task's module (`TASK_INSTANCES[task]`) maps. masks: segmentation's (n, H, W) at the input
    size, else None."""
    data = instance_fields(dets, lb)
    if task != "detect":
        data.update(TASK_INSTANCES[task](dets, lb, masks))
    return [InstanceData(**{name: values[k] for name, values in data.items()}) for k in range(len(dets))]


def select_detections(
    head: HeadOutputs,
    end2end: bool,
    conf: float = 0.25,
    iou: float = 0.7,
    classes: Sequence[int] | None = None,
    max_det: int = 300,
) -> list[list[Detection]]:
    """Per image, the detections kept by NMS (or top-k for end-to-end heads), highest confidence first.

    OBB heads (`head.rboxes` set) use ultralytics' rotated NMS; their detections carry `rbox`.
    Classification heads (`head.softmax`) give their top `max_det` classes with a softmax probability of at
    least `conf` (`classify.top_classes`), each a detection at anchor 0 whose box is the whole input.
    """
    if head.softmax:
        box = tuple(float(v) for v in head.boxes[0, 0])
        return [[Detection(b, 0, 0, c, p, box) for c, p in zip(*top)]
                for b, top in enumerate(top_classes(head.logits, conf, classes, max_det))]
    scores = head.logits.detach().float().sigmoid()  # (B, A, nc)
    boxes = head.boxes.detach().float()
    rboxes = None if head.rboxes is None else head.rboxes.detach().float()
    kpts = None if head.keypoints is None else _keypoint_scores(head.keypoints.detach().float())
    keep_cls = None if classes is None else torch.as_tensor(list(classes), device=scores.device)
    out = []
    for b in range(scores.shape[0]):
        if end2end:
            anchor, cls, score = _topk(scores[b], max_det)
        elif rboxes is not None:
            anchor, cls, score = rotated_nms(scores[b], rboxes[b], conf, iou, classes, max_det)
        else:
            anchor, cls, score = _nms(scores[b], boxes[b], conf, iou, keep_cls, max_det)
        if end2end:
            mask = score > conf
            if keep_cls is not None:
                mask &= (cls[:, None] == keep_cls).any(1)
            anchor, cls, score = anchor[mask], cls[mask], score[mask]
        dets = [
            Detection(b, int(a), int(head.levels[a]), int(c), float(s), tuple(float(v) for v in boxes[b, a]),
                      None if rboxes is None else tuple(float(v) for v in rboxes[b, a]),
                      None if kpts is None else tuple(tuple(row) for row in kpts[b, a].tolist()))
            for a, c, s in zip(anchor.tolist(), cls.tolist(), score.tolist())
        ]
        out.append(dets)
    return out


def _nms(scores, boxes, conf, iou, keep_cls, max_det):
    best, cls = scores.max(1)
    cand = (best > conf).nonzero().view(-1)
    if keep_cls is not None:
        cand = cand[(cls[cand, None] == keep_cls).any(1)]
    if cand.numel() > 30000:
        cand = cand[best[cand].argsort(descending=True)[:30000]]
    anchor = _greedy_nms(boxes[cand] + cls[cand, None].to(boxes.dtype) * MAX_WH, best[cand], iou, max_det, cand)
    return anchor, cls[anchor], best[anchor]


def _greedy_nms(boxes, scores, iou, max_det, index, first: int = 1024):
    """`index` of the first `max_det` boxes greedy NMS keeps, highest score first. Greedy NMS decides each
    box from the higher-scoring ones alone, so the `first` highest-scoring boxes give the same first kept
    boxes when they keep `max_det` of them (else twice as many are tried); kept in their order, so that
    equal scores are broken as over all boxes (torchvision sorts stably). With conf 0 and thousands of
    candidates this is about 50x cheaper than suppressing them all."""
    n = len(scores)
    while True:
        if n <= first:
            return index[torchvision.ops.nms(boxes, scores, iou)[:max_det]]
        top = (scores >= scores.topk(first).values[-1]).nonzero().view(-1)  # ties at the cut included, in order
        kept = torchvision.ops.nms(boxes[top], scores[top], iou)
        if len(kept) >= max_det:
            return index[top[kept[:max_det]]]
        first *= 2


def _topk(scores, max_det):
    """End-to-end selection: top anchors by best class, then top (anchor, class) pairs among them."""
    n_anchor, nc = scores.shape
    k = min(max_det, n_anchor)
    top_anchor = scores.max(1).values.topk(k).indices
    pair_scores, pair = scores[top_anchor].flatten().topk(k)
    return top_anchor[pair // nc], pair % nc, pair_scores


def _keypoint_scores(kpts: torch.Tensor) -> torch.Tensor:
    """(B, A, K, D) keypoints with visibility logits -> the same with visibility scores (sigmoid), as ultralytics."""
    if kpts.shape[-1] < 3:
        return kpts
    return torch.cat((kpts[..., :2], kpts[..., 2:].sigmoid()), -1)
