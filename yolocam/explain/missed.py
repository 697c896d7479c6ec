"""Why not: explain what the model missed (`Explainer.explain_missed`).

For each ground-truth object, the raw prediction (anchor) whose decoded box overlaps it best (IoU in
the letterboxed input; ties, e.g. all zero, broken by the ground-truth class's logit there) is
explained with the ground-truth class's logit as the target: where the model looked when it should
have found this object. The map is scored against the ground-truth box (pointing game, energy in box).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch

from ..cam.fusion import boxes_to_original
from ..cam.projection import ProjectorCache, content_region
from ..errors import YolocamError
from ..cam.box_scores import box_iou, energy_in_box, pointing_game
from ..inputs.images import iter_images, resolve_source
from ..model.detections import Detection
from ..model.targets import ClassLogit
from ..output.maps import MapRef, MapStack
from ..output.results import _HeatmapField


@dataclass
class MissedExplanation:
    """One ground truth explained with its class's logit at the raw prediction that overlaps it best.

    box, cls, name: the ground truth (original-image pixels). anchor, level: that prediction; pred_box its
    decoded box (original pixels); iou its IoU with the ground truth (letterboxed input); logit and conf:
    the ground-truth class's logit and sigmoid score there. heatmap: (H, W) float32 of the original image
    ([0, 1], or [-1, 1] for a signed Explainer). pointing, energy: the map's pointing game and share of
    (positive) energy inside the ground-truth box. reason: why the map is zero, else None.
    """

    box: list[float]
    cls: int
    name: str
    anchor: int
    level: int
    logit: float
    conf: float
    iou: float
    pred_box: list[float]
    heatmap: np.ndarray = _HeatmapField()
    pointing: bool = False
    energy: float = 0.0
    reason: str | None = None

    def to_dict(self) -> dict:
        out = {"box": [float(v) for v in self.box], "cls": int(self.cls), "name": self.name,
               "anchor": int(self.anchor), "level": int(self.level), "logit": float(self.logit),
               "conf": float(self.conf), "iou": float(self.iou), "pred_box": [float(v) for v in self.pred_box],
               "pointing": bool(self.pointing), "energy": float(self.energy)}
        return out if self.reason is None else {**out, "reason": self.reason}


def check_ground_truth(gt_boxes, gt_classes, names: dict[int, str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, 4) float32 xyxy boxes and (M,) long classes, checked; one-line YolocamError otherwise."""
    try:
        boxes = torch.as_tensor(np.asarray(gt_boxes, dtype=np.float64), dtype=torch.float32)
        classes = torch.as_tensor(np.asarray(gt_classes, dtype=np.float64))
    except (TypeError, ValueError) as exc:
        raise YolocamError(f"explain_missed: expected gt_boxes (M, 4) xyxy numbers and gt_classes (M,) class "
                           f"indices, got values that are not numbers ({exc})") from None
    if boxes.ndim == 1 and boxes.numel() in (0, 4):  # no boxes, or one box given flat
        boxes = boxes.reshape(-1, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise YolocamError(f"explain_missed: expected gt_boxes of shape (M, 4) xyxy, got {tuple(boxes.shape)}")
    classes = classes.reshape(-1)
    if len(classes) != len(boxes):
        raise YolocamError(f"explain_missed: expected one class per box, got {len(boxes)} boxes and "
                           f"{len(classes)} classes")
    if not torch.isfinite(boxes).all() or bool((boxes[:, 2:] <= boxes[:, :2]).any()):
        raise YolocamError("explain_missed: expected finite gt_boxes with x2 > x1 and y2 > y1 (xyxy pixels)")
    bad = [int(v) if v == int(v) else v for v in classes.tolist() if v != int(v) or int(v) not in names]
    if bad:
        listed = ", ".join(f"{k}={v}" for k, v in sorted(names.items()))
        raise YolocamError(f"explain_missed: gt class {bad[0]!r} is not one of this model's classes ({listed})")
    return boxes, classes.long()


def best_predictions(head, boxes: torch.Tensor, classes: torch.Tensor, row: int = 0,
                     iou: torch.Tensor | None = None) -> list[Detection]:
    """Per ground truth (letterboxed-input boxes (M, 4), classes (M,)): the raw prediction of batch row `row`
    of highest IoU with it, ties by the ground-truth class's logit, as a `Detection` of the ground-truth class
    (image `row`). The rule of `explain_missed` and of `yolocam val`'s missed objects. `iou`: (A, M) overlaps
    to use instead of the boxes' IoU (OBB: the rotated IoU)."""
    pred = head.boxes[row].detach().float()
    logits = head.logits[row].detach().float()
    iou = box_iou(pred, boxes.to(pred.device)) if iou is None else iou.to(pred.device)  # (A, M)
    out = []
    for j in range(len(boxes)):
        col, logit = iou[:, j], logits[:, int(classes[j])]
        tied = col == col.max()
        a = int(torch.where(tied, logit, torch.full_like(logit, -float("inf"))).argmax())
        out.append(Detection(row, a, int(head.levels[a]), int(classes[j]), float(logit[a].sigmoid()),
                             tuple(float(v) for v in pred[a])))
    return out


def engine_with_target(explainer, target, key: str):
    """The Explainer's CAM engine with another `target` (same model, method, layers, fusion and sign; its own
    caches), made once per Explainer and `key`."""
    cache = explainer.__dict__.setdefault("_why_not_engines", {})
    if key not in cache:
        engine = copy.copy(explainer.engine)
        engine.target = target
        engine.projectors = ProjectorCache()
        for name in ("_plans", "_job_bytes"):  # per-shape plans and memory estimates of the copied engine
            if hasattr(engine, name):
                setattr(engine, name, {})
        cache[key] = engine
    return cache[key]


def class_engine(explainer):
    """The Explainer's CAM engine with the class-logit target (the engine itself when it already has it)."""
    engine = explainer.engine
    if type(engine.target) is ClassLogit:
        return engine
    return engine_with_target(explainer, ClassLogit(), "class")


def explain_missed(explainer, image, gt_boxes, gt_classes) -> list[MissedExplanation]:
    """`Explainer.explain_missed`: one `MissedExplanation` per ground truth, in the given order."""
    if explainer.engine is None:
        raise YolocamError(f"explain_missed needs a gradient method (it explains a chosen prediction's class "
                           f"logit); got method={explainer.method.name!r}")
    if getattr(explainer.adapter, "task", "detect") == "classify":
        raise YolocamError("explain_missed needs a detector (boxes to match the ground truth); this is a "
                           "classification model")
    entries = resolve_source(image)
    if len(entries) != 1:
        raise YolocamError(f"explain_missed: expected one image (a path or a BGR array), got {len(entries)} entries")
    item = next(iter(iter_images(entries)))
    if item.error is not None:
        raise YolocamError(item.error)
    names = explainer.names
    boxes, classes = check_ground_truth(gt_boxes, gt_classes, names)
    if len(boxes) == 0:
        return []
    x, (lb,) = explainer.adapter.preprocess([item.image], explainer.imgsz)
    (gx, gy), dx, dy = lb.gain_xy, lb.left, lb.top
    scale = torch.tensor([gx, gy, gx, gy], dtype=torch.float32)
    inputs = boxes * scale + torch.tensor([dx, dy, dx, dy], dtype=torch.float32)
    chosen = {}

    def select(head):
        chosen["dets"] = best_predictions(head, inputs, classes)
        chosen["iou"] = box_iou(torch.tensor([d.box for d in chosen["dets"]]), inputs).diagonal().tolist()
        chosen["logit"] = [float(head.logits[0, d.anchor, d.cls]) for d in chosen["dets"]]
        return [chosen["dets"]]

    result = class_engine(explainer).run(x, select=select)
    dets, maps, why = chosen["dets"], result.heatmaps[0], result.reasons[0]
    stack = MapStack(content_region(maps, lb).float().cpu().numpy(), lb.orig_shape,
                     signed=getattr(explainer.engine, "signed", False))
    pred_boxes = boxes_to_original(torch.tensor([d.box for d in dets]).view(-1, 4), lb).tolist()
    out = []
    for k, d in enumerate(dets):
        heat = stack.full(k)
        positive = np.maximum(heat, 0)
        gt = boxes[k].tolist()
        out.append(MissedExplanation(gt, d.cls, names.get(d.cls, str(d.cls)), d.anchor, d.level, chosen["logit"][k],
                                     d.conf, float(chosen["iou"][k]), pred_boxes[k], MapRef(stack, k),
                                     pointing=pointing_game(positive, gt), energy=energy_in_box(positive, gt),
                                     reason=why[k]))
    return out
