"""How much of a map lies in a box: box masks, box IoU, the pointing game and energy in box(es), and
greedy box matching.

Maps and boxes in the same pixel frame, boxes xyxy in pixels; a pixel (row i, column j) belongs to a
box when its centre (j + 0.5, i + 0.5) lies inside it. Inputs may be numpy arrays or torch tensors;
everything is computed in torch. The explainer scores missed objects with these, and
`yolocam.metrics` re-exports them.
"""

from __future__ import annotations

import torch

from ..errors import YolocamError


def as_heatmap(heatmap) -> torch.Tensor:
    """A (H, W) or (N, H, W) map as a float32 tensor, NaN -> 0, negative values -> 0."""
    t = torch.as_tensor(heatmap)
    if t.ndim not in (2, 3):
        raise YolocamError(f"heatmap: expected shape (H, W) or (N, H, W), got {tuple(t.shape)}")
    return torch.nan_to_num(t.float(), nan=0.0, posinf=0.0, neginf=0.0).clamp(min=0)


def as_boxes(boxes) -> torch.Tensor:
    """Boxes as a float32 (N, 4) xyxy tensor (a single box may be given as 4 numbers)."""
    t = torch.as_tensor(boxes, dtype=torch.float32)
    if t.numel() == 0:
        return t.reshape(0, 4)
    if t.shape[-1] != 4:
        raise YolocamError(f"boxes: expected xyxy boxes of shape (4,) or (N, 4), got {tuple(t.shape)}")
    return t.reshape(-1, 4)


def box_masks(shape: tuple[int, int], boxes, device=None) -> torch.Tensor:
    """(N, H, W) bool: pixels whose centres lie inside each xyxy box (pixels)."""
    b = as_boxes(boxes).to(device)
    h, w = shape
    xs = torch.arange(w, device=b.device, dtype=torch.float32) + 0.5
    ys = torch.arange(h, device=b.device, dtype=torch.float32) + 0.5
    in_x = (xs >= b[:, 0:1]) & (xs <= b[:, 2:3])  # (N, W)
    in_y = (ys >= b[:, 1:2]) & (ys <= b[:, 3:4])  # (N, H)
    return in_y[:, :, None] & in_x[:, None, :]


def box_iou(a, b, eps: float = 1e-7) -> torch.Tensor:
    """Pairwise IoU (N, M) of xyxy boxes (inter / (union + eps), as ultralytics computes it)."""
    a = as_boxes(a)
    b = as_boxes(b).to(a.device)
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area = lambda x: (x[:, 2:] - x[:, :2]).clamp(min=0).prod(-1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None] - inter + eps)


# ----------------------------------------------------------------- localisation
def pointing_game(heatmap, box, tolerance: float = 0.0) -> bool:
    """True when a maximum of `heatmap` (H, W) lies inside `box` (grown by `tolerance` px); an all-zero map misses."""
    h = as_heatmap(heatmap)
    peak = h.max()
    if peak <= 0:
        return False
    grown = as_boxes(box) + torch.tensor([-tolerance, -tolerance, tolerance, tolerance])
    return bool((box_masks(tuple(h.shape), grown, h.device)[0] & (h == peak)).any())


def energy_in_box(heatmap, box) -> float:
    """Share of the map's mass inside `box`, in [0, 1]; 0 for an all-zero map."""
    return _energy(as_heatmap(heatmap), as_boxes(box))


def energy_in_boxes(heatmap, boxes) -> float:
    """Share of the map's mass on the union of `boxes` (N, 4); 0 when there are no boxes."""
    return _energy(as_heatmap(heatmap), as_boxes(boxes))


def _energy(h: torch.Tensor, boxes: torch.Tensor) -> float:
    total = h.sum()
    if total <= 0 or len(boxes) == 0:
        return 0.0
    union = box_masks(tuple(h.shape), boxes, h.device).any(0)
    return float((h * union).sum() / total)


def match_ground_truth(boxes, classes, gt_boxes, gt_classes, iou_thr: float = 0.5) -> torch.Tensor:
    """Greedy matching as ultralytics' validator does it: predictions in the given order (highest
    confidence first) each claim the unclaimed same-class ground truth of highest IoU >= `iou_thr`.
    Returns (N,) long: the ground-truth index per prediction, -1 when unmatched."""
    iou = box_iou(boxes, gt_boxes)  # (N, M)
    same = torch.as_tensor(classes).view(-1, 1).long() == torch.as_tensor(gt_classes).view(1, -1).long()
    iou = iou * same
    out = torch.full((iou.shape[0],), -1, dtype=torch.long)
    claimed = torch.zeros(iou.shape[1], dtype=torch.bool)
    for j in range(iou.shape[0]):
        if iou.shape[1] == 0:
            break
        avail = iou[j].masked_fill(claimed, 0.0)
        k = int(avail.argmax())
        if avail[k] >= iou_thr:
            out[j], claimed[k] = k, True
    return out
