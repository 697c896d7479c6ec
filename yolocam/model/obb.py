"""Oriented boxes (OBB heads `OBB`, `OBB26`): angle decoding, rotated NMS, letterbox mapping, corners.

Everything follows ultralytics' own OBB path, calling its functions where it has them:
- the angle branch (`cv4`, or `one2one_cv4` for end-to-end heads) gives one raw value per anchor;
  `OBB` maps it to radians as (sigmoid(raw) - 1/4) * pi, in [-pi/4, 3pi/4); `OBB26` uses it raw;
- a rotated box is ultralytics' `dist2rbox` of the (l, t, r, b) distances and the angle, times the
  stride: (cx, cy, w, h) in letterbox pixels, plus the angle (radians, not canonicalised, as
  `Results.obb.xywhr` gives it);
- NMS is ultralytics' `non_max_suppression(..., rotated=True)` (probabilistic IoU, class-aware);
- to the original image: centre and size unpadded and divided by the letterbox gain (as
  ultralytics' `scale_boxes(..., xywh=True)`: not clipped), angle unchanged; a detection's `box` there
  is the hull of its 4 corners, clipped to the image (`instance_fields`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..inputs.images import Letterbox

OBB_HEADS = ("OBB", "OBB26")


def is_obb(head: nn.Module) -> bool:
    """Whether `head` is an oriented-box head."""
    return type(head).__name__ in OBB_HEADS


def angle_branch(head: nn.Module, end2end: bool) -> nn.ModuleList | None:
    """The angle convolutions of the branch in use (None for heads without angles)."""
    if not is_obb(head):
        return None
    return head.one2one_cv4 if end2end else head.cv4


def decode_angle(head: nn.Module, raw: torch.Tensor) -> torch.Tensor:
    """Raw angle-branch output (B, A) -> radians (B, A), as the head's own `forward_head`."""
    if type(head).__name__ == "OBB26":
        return raw
    return (raw.sigmoid() - 0.25) * math.pi


def decode_rboxes(dist: torch.Tensor, angle: torch.Tensor, centres: torch.Tensor, strides: torch.Tensor):
    """Rotated boxes and their axis-aligned hulls in letterbox pixels.

    dist: (B, 4, A) l, t, r, b distances in grid units; angle: (B, A) radians; centres: (1, 2, A)
    anchor centres (grid units); strides: (A,) pixels. Returns rboxes (B, A, 5) = cx, cy, w, h
    (pixels), angle (radians), and hulls (B, A, 4) xyxy pixels.
    """
    from ultralytics.utils.tal import dist2rbox

    xywh = dist2rbox(dist, angle[:, None], centres, dim=1) * strides  # (B, 4, A)
    rboxes = torch.cat((xywh, angle[:, None]), 1).transpose(1, 2)
    return rboxes, hull(rboxes)


def hull(rboxes: torch.Tensor) -> torch.Tensor:
    """Axis-aligned hull (..., 4) xyxy of rotated boxes (..., 5) cx, cy, w, h, angle."""
    cos, sin = rboxes[..., 4].cos().abs(), rboxes[..., 4].sin().abs()
    w, h = rboxes[..., 2], rboxes[..., 3]
    half = torch.stack((w * cos + h * sin, w * sin + h * cos), -1) / 2
    return torch.cat((rboxes[..., :2] - half, rboxes[..., :2] + half), -1)


def rotated_nms(scores: torch.Tensor, rboxes: torch.Tensor, conf: float, iou: float, classes, max_det: int):
    """ultralytics' rotated NMS on one image -> (anchor, cls, score) of the kept boxes, best first.

    scores: (A, nc) post-sigmoid; rboxes: (A, 5) cx, cy, w, h, angle; classes: None or a list of indices.
    """
    from ultralytics.utils.nms import non_max_suppression

    nc = scores.shape[1]
    pred = torch.cat((rboxes[:, :4], scores, rboxes[:, 4:]), 1).t()[None]  # (1, 4 + nc + 1, A)
    out, keep = non_max_suppression(pred, conf, iou, classes=None if classes is None else list(classes),
                                    max_det=max_det, nc=nc, rotated=True, return_idxs=True)
    anchor = keep[0].view(-1).long()
    return anchor, out[0][:, 5].long(), out[0][:, 4]


def rboxes_to_original(rboxes: torch.Tensor, lb: Letterbox) -> torch.Tensor:
    """(N, 5) rotated boxes from letterbox pixels to original-image pixels (angle unchanged, not clipped)."""
    gx, gy = lb.gain_xy
    out = rboxes.clone().float()
    out[:, 0] = (out[:, 0] - lb.left) / gx
    out[:, 1] = (out[:, 1] - lb.top) / gy
    out[:, 2] /= gx
    out[:, 3] /= gy
    return out


def corners(rboxes: torch.Tensor) -> torch.Tensor:
    """(N, 5) rotated boxes -> (N, 4, 2) corner points (x, y), in ultralytics' `xyxyxyxy` order."""
    from ultralytics.utils.ops import xywhr2xyxyxyxy

    return xywhr2xyxyxyxy(rboxes)


def polygon_hulls(polygons: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Axis-aligned hulls (N, 4) xyxy of polygons (N, K, 2), clipped to an image of (H, W)."""
    lo, hi = polygons.amin(1), polygons.amax(1)
    size = torch.tensor([shape[1], shape[0]], dtype=polygons.dtype)
    return torch.cat((lo.clamp(min=0).minimum(size), hi.clamp(min=0).minimum(size)), 1)


def instance_fields(dets, lb: Letterbox, masks=None) -> dict[str, list]:
    """Oriented boxes' instance data in original-image pixels (`detections.instance_data_to_original`): per
    detection its rotated box [cx, cy, w, h, angle], its 4 corners [[x, y]] * 4 (`polygon`) and, as its
    `box`, their hull clipped to the image. Detections without a rotated box: none."""
    if not dets or dets[0].rbox is None:
        return {}
    rboxes = rboxes_to_original(torch.tensor([d.rbox for d in dets]).view(-1, 5), lb)
    polygons = corners(rboxes)
    return {"box": polygon_hulls(polygons, lb.orig_shape).tolist(), "rbox": rboxes.tolist(),
            "polygon": polygons.tolist()}
