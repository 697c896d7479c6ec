"""Pose heads (`Pose`, `Pose26`): the keypoint branch, its decoding, names, skeleton, letterbox mapping.

Everything follows ultralytics' own pose path, calling its functions:
- the keypoint branch (`cv4`, or `one2one_cv4` for end-to-end heads; `Pose26` then applies
  `cv4_kpts`) gives K * D raw values per anchor (D = 3: x, y, visibility);
- x, y are decoded by the head class's own `kpts_decode` (run on a stand-in holding our anchors, so
  the head's cached anchors are left as found): letterbox pixels; the visibility is kept as its raw
  logit in `HeadOutputs.keypoints` (targets differentiate it unsaturated) and reported as its sigmoid
  (as `Results.keypoints.conf`) on detections;
- to the original image: ultralytics' `scale_coords` with the letterbox's gain and padding (clipped).
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn

from ..errors import YolocamError
from ..inputs.images import Letterbox

POSE_HEADS = ("Pose", "Pose26")

COCO_KEYPOINTS = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)
# COCO skeleton as ultralytics' Annotator draws it, 0-based keypoint indices
COCO_SKELETON = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8),
    (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
)
VISIBLE = 0.5  # a keypoint is drawn when its visibility score exceeds this (as ultralytics)


def is_pose(head: nn.Module) -> bool:
    """Whether `head` is a pose head."""
    return type(head).__name__ in POSE_HEADS


def keypoint_branch(head: nn.Module, end2end: bool) -> list[nn.Module] | None:
    """Per level, the module mapping the head input (B, C, h, w) to raw keypoints (B, K*D, h, w); None if no pose head."""
    if not is_pose(head):
        return None
    if type(head).__name__ == "Pose26":
        feats, kpts = (head.one2one_cv4, head.one2one_cv4_kpts) if end2end else (head.cv4, head.cv4_kpts)
        return [nn.Sequential(f, k) for f, k in zip(feats, kpts)]  # wraps the head's own modules
    return list(head.one2one_cv4 if end2end else head.cv4)


def decode_keypoints(head: nn.Module, raw: torch.Tensor, anchors: torch.Tensor, strides: torch.Tensor) -> torch.Tensor:
    """Raw keypoints (B, K*D, A) -> (B, A, K, D): x, y in letterbox pixels, visibility as its raw logit.

    anchors: (A, 2) cell centres (grid units); strides: (A,) pixels. Uses the head class's `kpts_decode`.
    """
    k, d = head.kpt_shape
    stand_in = SimpleNamespace(kpt_shape=head.kpt_shape, export=False, anchors=anchors.t(), strides=strides[None])
    out = type(head).kpts_decode(stand_in, raw)  # (B, K*D, A), visibility sigmoided
    out = out.view(raw.shape[0], k, d, -1).permute(0, 3, 1, 2)
    if d == 3:  # keep the logit
        out = torch.cat((out[..., :2], raw.view(raw.shape[0], k, d, -1).permute(0, 3, 1, 2)[..., 2:]), -1)
    return out


def keypoint_names(module: nn.Module, k: int) -> list[str]:
    """The model's keypoint names (its `kpt_names`, as ultralytics' trainer sets them), COCO's for 17 keypoints,
    else their indices as strings."""
    names = getattr(module, "kpt_names", None)
    if isinstance(names, dict) and names:
        names = names.get(0, next(iter(names.values())))
    if isinstance(names, (list, tuple)) and len(names) == k:
        return [str(n) for n in names]
    return list(COCO_KEYPOINTS) if k == 17 else [str(i) for i in range(k)]


def resolve_keypoint(spec: str, names: list[str]) -> int:
    """A keypoint index from `spec` (an index or a name in `names`); YolocamError listing the valid ones."""
    if spec.lstrip("-").isdigit() and 0 <= int(spec) < len(names):
        return int(spec)
    if spec in names:
        return names.index(spec)
    raise YolocamError(f"unknown keypoint {spec!r}; expected an index 0..{len(names) - 1} or a name: "
                       f"{', '.join(names)}")


def keypoints_to_original(kpts: torch.Tensor, lb: Letterbox) -> torch.Tensor:
    """(N, K, D) keypoints from letterbox pixels to original-image pixels (ultralytics' `scale_coords`, clipped)."""
    from ultralytics.utils.ops import scale_coords

    gx, gy = lb.gain_xy
    return scale_coords(lb.shape, kpts.clone().float(), lb.orig_shape, ratio_pad=((gy, gx), (lb.left, lb.top)))


def instance_fields(dets, lb: Letterbox, masks=None) -> dict[str, list]:
    """Pose's instance data in original-image pixels (`detections.instance_data_to_original`): per detection
    its keypoints [[x, y, visibility]] * K (`keypoints_to_original`); the box is the plain detection's."""
    if not dets or dets[0].keypoints is None:
        return {}
    return {"keypoints": keypoints_to_original(torch.tensor([d.keypoints for d in dets]), lb).tolist()}
