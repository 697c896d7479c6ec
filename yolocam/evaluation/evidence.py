"""Evidence metrics: does a detection's map point at the part of the object that decides its class?

The evidence is given by the user, so the metrics work on any data with part annotations: a mask
(H, W) of the deciding part, or a disc `(cx, cy, diameter)` in pixels (the mark of an evidence scene,
`yolocam.demo.evidence`). Conventions as in `metrics`: pixel (row i, column j) has its centre at
(j + 0.5, i + 0.5); it lies in a box or disc when its centre does.

- `evidence_region`: the evidence grown to `dilate` times its size (default 1.5): a disc of
  diameter `dilate * diameter`; a mask grown by `(dilate - 1) / 2` times its extent (the larger side
  of its bounding box), which turns a disc mask of diameter d into the disc of diameter dilate * d.
- `evidence_pointing`: the map's peak lies in that region (1.0 / 0.0; with several equal maxima, the
  share of them inside, i.e. the expected hit of a random tie-break; 0.0 for an all-zero map).
- `evidence_share`: energy on the region inside the box / energy in the box (0.0 when the box holds none).
- `evidence_scores`: both for N detections at once (for validation / comparison loops).

Baselines that know only the box: `gaussian_box_map` (box-centred Gaussian) and `uniform_box_map`.
Inputs may be numpy arrays or torch tensors; negative and NaN heat counts as 0.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from ..errors import YolocamError

__all__ = ["evidence_region", "evidence_pointing", "evidence_share", "evidence_scores", "disc_mask",
           "gaussian_box_map", "uniform_box_map", "DEFAULT_DILATE"]

DEFAULT_DILATE = 1.5


def _heat(heatmap) -> torch.Tensor:
    t = torch.as_tensor(heatmap)
    if t.ndim != 2:
        raise YolocamError(f"heatmap: expected shape (H, W), got {tuple(t.shape)}")
    return torch.nan_to_num(t.float(), nan=0.0, posinf=0.0, neginf=0.0).clamp(min=0)


def _centres(shape: tuple[int, int], device=None) -> tuple[torch.Tensor, torch.Tensor]:
    h, w = shape
    ys = torch.arange(h, device=device, dtype=torch.float32) + 0.5
    xs = torch.arange(w, device=device, dtype=torch.float32) + 0.5
    return ys[:, None], xs[None, :]


def _box_mask(shape: tuple[int, int], box, device=None) -> torch.Tensor:
    b = torch.as_tensor(box, dtype=torch.float32).reshape(-1)
    if b.numel() != 4:
        raise YolocamError(f"box: expected 4 numbers x1, y1, x2, y2, got {b.numel()}")
    y, x = _centres(shape, device)
    return (x >= b[0]) & (x <= b[2]) & (y >= b[1]) & (y <= b[3])


def disc_mask(shape: tuple[int, int], centre: Sequence[float], diameter: float, device=None) -> torch.Tensor:
    """bool (H, W): pixels whose centres lie within diameter / 2 of `centre` (x, y)."""
    y, x = _centres(shape, device)
    cx, cy = (float(v) for v in centre)
    return (x - cx) ** 2 + (y - cy) ** 2 <= (float(diameter) / 2) ** 2


def _grow(mask: torch.Tensor, radius: float) -> torch.Tensor:
    """Pixels whose centres lie within `radius` of a pixel of `mask` (Euclidean dilation)."""
    k = int(math.floor(radius))
    if k < 1 or not mask.any():
        return mask
    h, w = mask.shape
    ys, xs = torch.nonzero(mask, as_tuple=True)
    y0, y1 = max(0, int(ys.min()) - k), min(h, int(ys.max()) + k + 1)
    x0, x1 = max(0, int(xs.min()) - k), min(w, int(xs.max()) + k + 1)
    off = torch.arange(-k, k + 1, device=mask.device, dtype=torch.float32)
    kernel = ((off[:, None] ** 2 + off[None, :] ** 2) <= radius * radius + 1e-9).float()
    crop = mask[y0:y1, x0:x1].float()[None, None]
    grown = torch.nn.functional.conv2d(crop, kernel[None, None], padding=k)[0, 0] > 0.5
    out = mask.clone()
    out[y0:y1, x0:x1] |= grown
    return out


def evidence_region(shape: tuple[int, int], evidence, dilate: float = DEFAULT_DILATE, device=None) -> torch.Tensor:
    """bool (H, W): the evidence grown to `dilate` times its size.

    evidence: a mask (H, W) (bool, or numbers: non-zero = evidence), or a disc `(cx, cy, diameter)`.
    """
    if float(dilate) < 1.0:
        raise YolocamError(f"dilate: expected a factor >= 1, got {dilate}")
    if isinstance(evidence, dict):
        evidence = (*evidence["centre"], evidence["diameter"])
    t = torch.as_tensor(evidence)
    if t.ndim == 1 and t.numel() == 3:
        cx, cy, d = (float(v) for v in t)
        return disc_mask(shape, (cx, cy), d * float(dilate), device)
    if t.ndim != 2:
        raise YolocamError("evidence: expected a mask (H, W) or a disc (cx, cy, diameter), "
                           f"got shape {tuple(t.shape)}")
    if tuple(t.shape) != tuple(shape):
        raise YolocamError(f"evidence: mask of shape {tuple(t.shape)} does not match the map's {tuple(shape)}")
    mask = (t != 0).to(device) if t.dtype != torch.bool else t.to(device)
    if not mask.any():
        return mask
    ys, xs = torch.nonzero(mask, as_tuple=True)
    extent = max(int(ys.max() - ys.min()) + 1, int(xs.max() - xs.min()) + 1)
    return _grow(mask, (float(dilate) - 1.0) * extent / 2)


def evidence_pointing(heatmap, evidence, dilate: float = DEFAULT_DILATE) -> float:
    """1.0 when the map's maximum lies in the evidence region (see `evidence_region`), else 0.0.

    With several equal maxima: the share of them inside (the expected hit of a random tie-break), so a
    flat map scores its region's share of its support instead of a free hit. All-zero map: 0.0.
    """
    h = _heat(heatmap)
    region = evidence_region(tuple(h.shape), evidence, dilate, h.device)
    peak = h.max()
    if peak <= 0:
        return 0.0
    at_peak = h == peak
    return float((at_peak & region).sum()) / float(at_peak.sum())


def evidence_share(heatmap, evidence, box, dilate: float = DEFAULT_DILATE) -> float:
    """Share of the map's energy inside `box` (xyxy pixels) that lies on the evidence region, in [0, 1].

    0.0 when the box holds no energy.
    """
    h = _heat(heatmap)
    inside = _box_mask(tuple(h.shape), box, h.device)
    region = evidence_region(tuple(h.shape), evidence, dilate, h.device)
    total = (h * inside).sum()
    if total <= 0:
        return 0.0
    return float((h * (inside & region)).sum() / total)


def evidence_scores(heatmaps, boxes, evidences, dilate: float = DEFAULT_DILATE) -> tuple[torch.Tensor, torch.Tensor]:
    """Per detection: (pointing (N,), share (N,)) float64 for maps (N, H, W), boxes (N, 4) and one
    evidence (mask or disc) per detection; None as an evidence gives NaN (no part annotation)."""
    maps = torch.as_tensor(heatmaps)
    maps = maps.reshape(-1, *maps.shape[-2:])
    b = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    evidences = list(evidences)
    if not len(maps) == len(b) == len(evidences):
        raise YolocamError(f"evidence_scores: {len(maps)} maps, {len(b)} boxes and {len(evidences)} evidences")
    nan = float("nan")
    pointing = [nan if e is None else evidence_pointing(m, e, dilate) for m, e in zip(maps, evidences)]
    share = [nan if e is None else evidence_share(m, e, bb, dilate) for m, bb, e in zip(maps, b, evidences)]
    return torch.tensor(pointing, dtype=torch.float64), torch.tensor(share, dtype=torch.float64)


# ------------------------------------------------------------------ baselines
def gaussian_box_map(shape: tuple[int, int], box, sigma: float = 0.25) -> torch.Tensor:
    """float32 (H, W): a Gaussian centred on `box`, standard deviations `sigma` x its width and height,
    peak 1 at the centre (what a detector-agnostic "the object is where the box is" prior looks like)."""
    b = torch.as_tensor(box, dtype=torch.float32).reshape(-1)
    y, x = _centres(shape)
    sx = max(float(b[2] - b[0]) * sigma, 1e-6)
    sy = max(float(b[3] - b[1]) * sigma, 1e-6)
    cx, cy = float(b[0] + b[2]) / 2, float(b[1] + b[3]) / 2
    return torch.exp(-((x - cx) ** 2 / (2 * sx * sx) + (y - cy) ** 2 / (2 * sy * sy)))


def uniform_box_map(shape: tuple[int, int], box) -> torch.Tensor:
    """float32 (H, W): 1 on the pixels inside `box`, 0 elsewhere."""
    return _box_mask(shape, box).float()
