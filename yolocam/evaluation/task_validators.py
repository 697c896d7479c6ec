"""ultralytics' validator of each task, recording what it sees for `validation.Collector`, and the
oriented-box (OBB) parts of the collector: matching rotated boxes and scoring maps against them.

| task    | validator (ultralytics)  | explanations labelled by          | localisation measured against   |
|---------|--------------------------|-----------------------------------|---------------------------------|
| detect  | `DetectionValidator`     | its box tp matrix, IoU 0.5        | the ground-truth box            |
| segment | `SegmentationValidator`  | its box tp matrix (not `tp_m`)    | the ground-truth box            |
| pose    | `PoseValidator`          | its box tp matrix (not `tp_p`)    | the ground-truth box            |
| obb     | `OBBValidator`           | its rotated-box tp matrix (probiou) | the rotated ground-truth box  |

`explaining_validator(task)` is the task's validator class, unchanged, that also hands each batch
(image, predictions, labels, box tp matrix) to a collector. For OBB the validator's boxes are (n, 5)
xywhr in letterbox pixels (its ground truth too); `match_rotated` finds the raw prediction each came
from by comparing corner sets (angle periodicity and ultralytics' w/h swap do not matter there), and
`localise_rotated` scores maps with `instance_metrics` on the rotated ground-truth boxes.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..errors import YolocamError
from .dataset_scan import NO_SKIPS, listed_images, no_usable_images, skipped_by_scan
from .instance_metrics import energy_in_mask, pointing_in_mask, rbox_mask
from .metrics import Localisation

TASKS = ("detect", "segment", "pose", "obb")
ANCHOR_TOLERANCE_PX = 1.0  # a validator box must equal a raw prediction's box to this many pixels ...
ANCHOR_TOLERANCE_REL = 1e-3  # ... plus this share of its size (float32 of a fused model on large boxes)


def validator_class(task: str):
    """ultralytics' validator class of `task` (detect, segment, pose, obb)."""
    from ultralytics.models.yolo import detect, obb, pose, segment

    classes = {"detect": detect.DetectionValidator, "segment": segment.SegmentationValidator,
               "pose": pose.PoseValidator, "obb": obb.OBBValidator}
    if task == "classify":
        raise YolocamError("validation of classification models is not supported: expected a detect, segment, "
                           "pose or obb model, got a classification model")
    if task not in classes:
        raise YolocamError(f"validation: expected a model of task {', '.join(TASKS)}, got task {task!r}")
    return classes[task]


def metrics_class(task: str):
    """ultralytics' metrics class of `task` (what its validator accumulates statistics into)."""
    from ultralytics.utils import metrics

    validator_class(task)  # an unsupported task: one clear line
    return {"detect": metrics.DetMetrics, "segment": metrics.SegmentMetrics, "pose": metrics.PoseMetrics,
            "obb": metrics.OBBMetrics}[task]


class ExplainingMixin:
    """Put before an ultralytics validator class: it records the arguments and result of the validator's own
    `_process_batch` (the box tp matrix) per image, and after `update_metrics` passes (validator batch image,
    predictions, labels, tp) to the collector."""

    def __init__(self, dataloader=None, save_dir=None, args=None, _callbacks=None, collector=None):
        super().__init__(dataloader, save_dir, args, _callbacks)
        self.collector = collector
        self._pending: list = []
        self.skipped = dict(NO_SKIPS)  # what ultralytics' dataset scan left out (`dataset_scan.skipped_by_scan`)

    def build_dataset(self, img_path, mode: str = "val", batch=None):
        """ultralytics' dataset; what its scan left out is kept in `skipped` (`dataset_scan`), and no image, or
        no usable one, is one `YolocamError`."""
        try:
            dataset = super().build_dataset(img_path, mode=mode, batch=batch)
        except FileNotFoundError:
            listed_images(img_path, data=self.args.data)  # says which folder has no images
            raise
        except RuntimeError as exc:
            if "No valid images" not in str(exc):
                raise
            raise no_usable_images(img_path, exc, self.args.data) from None
        self.skipped = skipped_by_scan(dataset)
        return dataset

    def init_metrics(self, model) -> None:
        super().init_metrics(model)
        if self.collector is not None:  # explain the head branch the validator uses (one-to-one or not)
            self.collector.start(end2end=bool(self.end2end))

    def _process_batch(self, preds, batch):
        out = super()._process_batch(preds, batch)
        self._pending.append((preds, batch, out["tp"]))
        return out

    def get_stats(self):
        """ultralytics' metrics; the per-prediction statistics they come from are kept first (`raw_stats`:
        tp, conf, pred_cls, target_cls, target_img arrays, plus tp_m / tp_p for segment / pose) so shards of
        a dataset can be merged exactly."""
        stats = self.metrics.stats
        if all(len(v) for v in stats.values()):
            self.raw_stats = {k: np.concatenate(v, 0) for k, v in stats.items()}
        return super().get_stats()

    def update_metrics(self, preds, batch) -> None:
        self._pending = []
        super().update_metrics(preds, batch)
        if self.collector is not None:
            self.collector.add_batch(batch["img"], self._pending)


_CLASSES: dict = {}


def explaining_validator(task: str):
    """The validator class of `task` with `ExplainingMixin` (one class per task, made once)."""
    if task not in _CLASSES:
        base = validator_class(task)
        name = "ExplainingValidator" if task == "detect" else f"Explaining{base.__name__}"
        _CLASSES[task] = type(name, (ExplainingMixin, base), {"__module__": __name__, "__doc__": (
            f"ultralytics' `{base.__name__}`, unchanged, that also hands each batch to a `Collector`.")})
    return _CLASSES[task]


# ------------------------------------------------------------------ rotated boxes
def corners(rboxes: torch.Tensor) -> torch.Tensor:
    """(..., 4, 2) corners of rotated boxes (..., 5) cx, cy, w, h, angle (radians)."""
    r = rboxes.double()
    c, s = r[..., 4].cos(), r[..., 4].sin()
    hw, hh = r[..., 2] / 2, r[..., 3] / 2
    sx = torch.tensor([1.0, 1.0, -1.0, -1.0], dtype=r.dtype, device=r.device)
    sy = torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=r.dtype, device=r.device)
    xs = r[..., 0, None] + sx * (hw * c)[..., None] - sy * (hh * s)[..., None]
    ys = r[..., 1, None] + sx * (hw * s)[..., None] + sy * (hh * c)[..., None]
    return torch.stack([xs, ys], -1)


def rbox_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N, M) pixels: the largest distance from a corner of a[i] to the nearest corner of b[j] and back
    (the Hausdorff distance of the corner sets): 0 for the same rectangle written with another angle."""
    ca, cb = corners(a)[:, None, :, None], corners(b)[None, :, None, :]  # (N, 1, 4, 1, 2), (1, M, 1, 4, 2)
    d = (ca - cb).norm(dim=-1)  # (N, M, 4, 4)
    return torch.maximum(d.amin(-1).amax(-1), d.amin(-2).amax(-1)).float()


def rbox_hull(rboxes: torch.Tensor) -> torch.Tensor:
    """(N, 4) xyxy axis-aligned hulls of rotated boxes (N, 5)."""
    c = corners(rboxes)
    return torch.cat([c.amin(-2), c.amax(-2)], -1).float()


def rotated_iou(a, b) -> torch.Tensor:
    """(N, M) probabilistic IoU of rotated boxes, as ultralytics' OBB validator measures overlap."""
    from ultralytics.utils.metrics import batch_probiou

    a, b = torch.as_tensor(a).float().reshape(-1, 5), torch.as_tensor(b).float().reshape(-1, 5)
    if len(a) == 0 or len(b) == 0:
        return torch.zeros(len(a), len(b))
    return batch_probiou(a, b).float().cpu()


def greedy_match(iou: torch.Tensor, classes, gt_classes, iou_thr: float = 0.5) -> torch.Tensor:
    """Predictions in order (highest confidence first) each claim the unclaimed same-class ground truth of
    highest overlap >= `iou_thr` in `iou` (N, M). Returns (N,) long ground-truth index, -1 when unmatched."""
    same = torch.as_tensor(classes).view(-1, 1).long() == torch.as_tensor(gt_classes).view(1, -1).long()
    iou = iou * same
    out = torch.full((iou.shape[0],), -1, dtype=torch.long)
    claimed = torch.zeros(iou.shape[1], dtype=torch.bool)
    for j in range(iou.shape[0] if iou.shape[1] else 0):
        avail = iou[j].masked_fill(claimed, 0.0)
        k = int(avail.argmax())
        if avail[k] >= iou_thr:
            out[j], claimed[k] = k, True
    return out


def localise_rotated(heatmaps, rboxes, classes, gt_rboxes, gt_classes, tp: torch.Tensor,
                     iou_thr: float = 0.5) -> Localisation:
    """As `metrics.localise`, against rotated ground-truth boxes (M, 5) in the maps' pixels: the reference of
    a true positive is its greedy rotated-IoU match (the best same-class overlap if the replica disagrees
    with `tp`), of a false positive the ground truth of highest rotated IoU (nearest centre when none
    overlaps). pointing = `pointing_in_mask` of the reference's rotated box, energy = `energy_in_mask`,
    energy_other = the share on the union of the other ground truths' rotated boxes."""
    maps = torch.as_tensor(heatmaps).float().cpu()
    b, g = torch.as_tensor(rboxes).float().reshape(-1, 5), torch.as_tensor(gt_rboxes).float().reshape(-1, 5)
    cls, gcls = torch.as_tensor(classes).view(-1).long(), torch.as_tensor(gt_classes).view(-1).long()
    n, m = len(b), len(g)
    is_tp = torch.as_tensor(tp).view(-1).bool()
    nan = torch.full((n,), float("nan"))
    ref = torch.full((n,), -1, dtype=torch.long)
    pointing, energy, other = nan.clone(), nan.clone(), torch.zeros(n)
    if m:
        iou = rotated_iou(b, g)
        matched = greedy_match(iou, cls, gcls, iou_thr)
        best_same = (iou * (cls[:, None] == gcls[None])).argmax(1)
        dist = torch.cdist(b[:, :2], g[:, :2])
        nearest = torch.where(iou.amax(1) > 0, iou.argmax(1), dist.argmin(1))
        ref = torch.where(is_tp, torch.where(matched >= 0, matched, best_same), nearest)
        masks = torch.stack([rbox_mask(tuple(maps.shape[-2:]), r) for r in g])  # (M, H, W)
        for k in range(n):
            r = int(ref[k])
            pointing[k] = pointing_in_mask(maps[k], masks[r])
            energy[k] = energy_in_mask(maps[k], masks[r])
            rest = torch.ones(m, dtype=torch.bool)
            rest[r] = False
            other[k] = energy_in_mask(maps[k], masks[rest].any(0)) if rest.any() else 0.0
    claimed = torch.zeros(m, dtype=torch.bool)
    claimed[ref[is_tp & (ref >= 0)]] = True
    return Localisation(ref, is_tp, pointing, energy, other, ~claimed)


def rbox_to_original(rboxes: torch.Tensor, pb) -> torch.Tensor:
    """(N, 5) xywhr from the validator's input pixels to original-image pixels (not clipped)."""
    (gain, _), (left, top) = pb["ratio_pad"]
    out = rboxes.clone().float().reshape(-1, 5)
    out[:, 0] = (out[:, 0] - float(left)) / float(gain)
    out[:, 1] = (out[:, 1] - float(top)) / float(gain)
    out[:, 2:4] = out[:, 2:4] / float(gain)
    return out


def check_pose_dataset(kpt_shape: Sequence[int], expected: Sequence[int]) -> None:
    """The generated pose scenes have `expected` keypoints; a model with another kpt_shape needs its own data."""
    if [int(v) for v in kpt_shape] != [int(v) for v in expected]:
        raise YolocamError(f"data: the generated pose scenes have kpt_shape {list(expected)}, the model has "
                           f"{[int(v) for v in kpt_shape]}: pass its own dataset with --data")
