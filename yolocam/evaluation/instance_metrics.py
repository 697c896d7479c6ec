"""Localisation metrics against an instance's own region or point (masks, rotated boxes, keypoints).

The box metrics in `metrics` ask whether a map falls in the axis-aligned box; these ask the same of the
region that a segmentation, oriented-box or pose model claims. Conventions as in `metrics`: pixel
(row i, column j) has its centre at (j + 0.5, i + 0.5) and lies in a region when its centre does.

- `rbox_mask`: (H, W) bool of a rotated box (cx, cy, w, h, angle in radians, as ultralytics' xywhr);
- `pointing_in_mask` / `energy_in_mask`: the map's peak lies in the mask (with ties, the share of the
  maxima inside) / the share of its mass on the mask;
- `peak_distance`: distance in pixels from the map's peak (the mean of tied maxima) to a point; inf
  for an all-zero map.

Inputs may be numpy arrays or torch tensors; negative and NaN heat counts as 0.
"""

from __future__ import annotations

import math

import torch

from ..errors import YolocamError

__all__ = ["rbox_mask", "pointing_in_mask", "energy_in_mask", "peak_distance"]


def _heat(heatmap) -> torch.Tensor:
    t = torch.as_tensor(heatmap)
    if t.ndim != 2:
        raise YolocamError(f"heatmap: expected shape (H, W), got {tuple(t.shape)}")
    return torch.nan_to_num(t.float(), nan=0.0, posinf=0.0, neginf=0.0).clamp(min=0)


def _mask(mask, shape) -> torch.Tensor:
    m = torch.as_tensor(mask).bool()
    if tuple(m.shape) != tuple(shape):
        raise YolocamError(f"mask: expected shape {tuple(shape)} (the heatmap's), got {tuple(m.shape)}")
    return m


def rbox_mask(shape: tuple[int, int], rbox) -> torch.Tensor:
    """(H, W) bool: pixels whose centres lie inside the rotated box (cx, cy, w, h, angle) in pixels/radians."""
    r = [float(v) for v in torch.as_tensor(rbox, dtype=torch.float64).reshape(-1).tolist()]
    if len(r) != 5:
        raise YolocamError(f"rbox: expected 5 numbers (cx, cy, w, h, angle), got {len(r)}")
    cx, cy, w, h, a = r
    ys = torch.arange(shape[0], dtype=torch.float64)[:, None] + 0.5 - cy
    xs = torch.arange(shape[1], dtype=torch.float64)[None, :] + 0.5 - cx
    c, s = math.cos(a), math.sin(a)
    along, across = xs * c + ys * s, -xs * s + ys * c  # coordinates in the box's own axes
    return (along.abs() <= w / 2) & (across.abs() <= h / 2)


def pointing_in_mask(heatmap, mask) -> float:
    """1.0 when the map's maximum lies in `mask` (H, W), with ties the share of maxima inside; 0.0 for a zero map."""
    h = _heat(heatmap)
    m = _mask(mask, h.shape)
    peak = h.max()
    if peak <= 0:
        return 0.0
    top = h == peak
    return float((top & m).sum() / top.sum())


def energy_in_mask(heatmap, mask) -> float:
    """Share of the map's mass on `mask` (H, W), in [0, 1]; 0.0 for an all-zero map."""
    h = _heat(heatmap)
    total = h.sum()
    return float((h * _mask(mask, h.shape)).sum() / total) if total > 0 else 0.0


def peak_distance(heatmap, point) -> float:
    """Distance in pixels from the map's peak (the mean position of tied maxima) to `point` (x, y)."""
    h = _heat(heatmap)
    peak = h.max()
    if peak <= 0:
        return math.inf
    rows, cols = torch.nonzero(h == peak, as_tuple=True)
    x, y = float(cols.double().mean()) + 0.5, float(rows.double().mean()) + 0.5
    px, py = (float(v) for v in point[:2])
    return math.hypot(x - px, y - py)
