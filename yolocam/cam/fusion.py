"""Combining maps: per-map normalisation, layer fusion, and mapping back to the original image.

All maps are (N, H, W) torch tensors; normalised maps are in [0, 1], zeros where there is no
positive evidence, never NaN.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from ..errors import YolocamError
from ..inputs.images import Letterbox

FUSIONS = ("sum", "max", "origin", "aligned", "gate")


def normalise(maps: torch.Tensor) -> torch.Tensor:
    """Rectify and scale each map by its maximum: (N, H, W) -> (N, H, W) in [0, 1] (a new tensor)."""
    return normalise_(maps.float().clone())


def normalise_(maps: torch.Tensor) -> torch.Tensor:
    """`normalise` in place on a float tensor the caller owns (no copies of full-size maps)."""
    torch.nan_to_num_(maps, nan=0.0, posinf=0.0, neginf=0.0).clamp_(min=0)
    peak = maps.amax((-2, -1), keepdim=True).clamp_(min=1e-30)  # all-zero maps stay zero
    return maps.div_(peak)


def scale_to_unit_(maps: torch.Tensor) -> torch.Tensor:
    """Divide each non-negative, finite (N, H, W) map by its maximum, in place (all-zero maps stay zero)."""
    return maps.div_(maps.amax((-2, -1), keepdim=True).clamp_(min=1e-30))


def resize_maps(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of (N, h, w) maps to `size` (H, W)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]


def smooth_maps(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian low-pass of (N, h, w) maps with standard deviation `sigma` in cells of their own grid
    (separable, edges replicated; the kernel is cut at 3 sigma). sigma 0: the maps themselves.

    A layer's gradient is aliased by the strided convolutions after it (a stride-2 convolution reads
    every second cell, so the gradient it sends back carries a 2-cell checkerboard that a 1-px shift of
    the image rewrites); filtering at the layer's own grid removes that pattern before maps are fused.
    """
    if sigma <= 0 or maps.numel() == 0:
        return maps
    r = int(math.ceil(3 * sigma))
    x = torch.arange(-r, r + 1, device=maps.device, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    weights = (k / k.sum()).to(maps.dtype).tolist()
    h, w = maps.shape[-2:]
    t = F.pad(maps[:, None], (r, r, 0, 0), mode="replicate")[:, 0]  # along rows, then along columns
    out = t[..., :w] * weights[0]
    for i in range(1, 2 * r + 1):  # shifted adds: a 1-channel conv2d takes 20x longer on one CPU thread
        out.add_(t[..., i:i + w], alpha=weights[i])
    t = F.pad(out[:, None], (0, 0, r, r), mode="replicate")[:, 0]
    out = t[:, :h] * weights[0]
    for i in range(1, 2 * r + 1):
        out.add_(t[:, i:i + h], alpha=weights[i])
    return out


def check_smooth(sigma) -> float:
    """`smooth` as a finite number of cells >= 0 (a YolocamError otherwise)."""
    try:
        value = float(sigma)
    except (TypeError, ValueError):
        raise YolocamError(f"smooth: expected a number of cells >= 0, got {sigma!r}") from None
    if not math.isfinite(value) or value < 0 or value > 16:
        raise YolocamError(f"smooth: expected a number of cells in [0, 16], got {sigma!r}")
    return value


def check_fusion(name: str) -> str:
    if name not in FUSIONS:
        raise YolocamError(f"unknown fuse {name!r}; expected one of {', '.join(FUSIONS)}")
    return name


def fuse_layer_maps(
    maps: Sequence[torch.Tensor],
    mode: str,
    size: tuple[int, int],
    layer_strides: Sequence[float],
    job_strides: torch.Tensor,
) -> torch.Tensor:
    """Fuse per-layer raw maps [(N, h_l, w_l)] into one normalised (N, H, W) map at input `size`.

    sum: rectified maps upsampled and summed, then normalised. max: each normalised, element-wise max.
    origin: per job, the layer whose stride is closest to the job's detection stride (`job_strides`, (N,)).
    gate: the finest layer's normalised map times the `sum` fusion of the others: the fine map's detail,
    kept only where the coarser layers agree (with one layer, or coarser maps all zero, the fine map).
    """
    if mode == "sum":
        total = None
        for m in maps:  # rectify at the layer's own resolution, then upsample and accumulate in place
            up = resize_maps(torch.nan_to_num(m.float()).clamp_(min=0), size)
            total = up.clone() if total is None else total.add_(up)
        return normalise_(total)
    if mode == "max":
        total = None
        for m in maps:
            up = resize_maps(normalise(m), size)
            total = up.clone() if total is None else torch.maximum(total, up, out=total)
        return total
    if mode == "gate":
        finest = max(range(len(maps)), key=lambda k: maps[k].shape[-2] * maps[k].shape[-1])
        fine = resize_maps(normalise(maps[finest]), size)
        rest = [m for k, m in enumerate(maps) if k != finest]
        if not rest:
            return fine
        gate = fuse_layer_maps(rest, "sum", size, layer_strides, job_strides)
        ungated = gate.amax((-2, -1)) == 0  # jobs the coarser layers say nothing about keep the fine map
        gate[ungated] = 1.0
        return normalise_(fine.mul_(gate))
    if mode == "origin":
        log_layer = torch.tensor([math.log2(s) for s in layer_strides], device=job_strides.device)
        pick = (job_strides.float().log2()[:, None] - log_layer[None]).abs().argmin(1)  # (N,)
        out = torch.empty((len(pick), *size), device=job_strides.device)
        for k, m in enumerate(maps):  # each job's map from its own layer only
            rows = (pick == k).nonzero().view(-1)
            if len(rows):
                out[rows] = resize_maps(normalise(m[rows]), size)
        return out
    raise YolocamError(f"unknown fuse {mode!r}; expected one of {', '.join(FUSIONS)}")


def to_original(maps: torch.Tensor, lb: Letterbox) -> torch.Tensor:
    """Crop letterbox padding from (N, H, W) input-space maps, resize to the original (h0, w0), renormalise."""
    w, h = lb.new_unpad
    cropped = maps[:, lb.top:lb.top + h, lb.left:lb.left + w]
    resized = resize_maps(cropped, lb.orig_shape)
    return normalise_(resized.clone() if resized is cropped else resized)


def boxes_to_original(boxes: torch.Tensor, lb: Letterbox) -> torch.Tensor:
    """(N, 4) xyxy boxes from input pixels to original-image pixels, clipped to the image."""
    gx, gy = lb.gain_xy
    out = boxes.clone().float()
    out[:, [0, 2]] = ((out[:, [0, 2]] - lb.left) / gx).clamp(0, lb.orig_shape[1])
    out[:, [1, 3]] = ((out[:, [1, 3]] - lb.top) / gy).clamp(0, lb.orig_shape[0])
    return out
