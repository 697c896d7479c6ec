"""Signed maps (`Explainer(signed=True)`): what raised the target positive, what lowered it negative.

A map is kept signed only where the sign is a per-position statement: HiResCAM (alias ODAM),
sum_c g_c(x) A_c(x), is the first-order change of the target if the activations at x were removed,
so a negative cell is one whose features argue against the box. The other methods do not say
that: Grad-CAM, Grad-CAM++, XGrad-CAM and SmoothGrad-CAM++ weight whole channels by a pooled
gradient (a cell's sign then reflects which channels are active there, not its own effect on the
target); LayerCAM rectifies the gradient (never negative); SS-Grad-CAM(++) scale by |g| (sign
discarded); Eigen(Grad)CAM's principal-component sign is a convention; D-RISE weights masks by a
non-negative similarity. Those are refused in one line.

Fusion of signed maps: `sum` and `aligned` add the layers' raw maps after resizing (no rectification),
`origin` takes the detection's own level; each map is then scaled by its largest magnitude, into
[-1, 1]. `max` and `gate` (which compare rectified magnitudes) and multi-component targets (whose
components are max-combined) are refused.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from ..errors import YolocamError
from .projection import ProjectorCache

SIGNED_METHODS = ("hirescam",)  # registered names; `odam` is hirescam's alias
SIGNED_FUSIONS = ("sum", "aligned", "origin")


def check_signed(signed, method, target, fuse: str) -> bool:
    """`signed` as a bool, after checking that the method, target and fusion keep a meaningful sign."""
    if not isinstance(signed, bool):
        raise YolocamError(f"signed: expected True or False, got {signed!r}")
    if not signed:
        return False
    if method.name not in SIGNED_METHODS:
        raise YolocamError(f"signed=True needs an element-wise method whose sign is per position: expected "
                           f"method {' or '.join(SIGNED_METHODS)} (alias odam), got {method.name!r} (channel-pooled, "
                           f"rectified, |g|-scaled, eigen and black-box maps have no per-position sign)")
    if target.n_components > 1:
        raise YolocamError(f"signed=True needs a single-scalar target (class, conf, cluster, contrast, mask, a "
                           f"callable); got {target.name!r}, whose {target.n_components} components are max-combined")
    if fuse not in SIGNED_FUSIONS:
        raise YolocamError(f"signed=True: expected fuse {', '.join(SIGNED_FUSIONS)}, got {fuse!r} (it compares "
                           f"rectified magnitudes)")
    return True


def scale_signed_(maps: torch.Tensor) -> torch.Tensor:
    """Divide each (N, H, W) map by its largest magnitude, in place, into [-1, 1] (all-zero maps stay zero)."""
    torch.nan_to_num_(maps, nan=0.0, posinf=0.0, neginf=0.0)
    return maps.div_(maps.abs().amax((-2, -1), keepdim=True).clamp_(min=1e-30))


def assemble_signed_maps(layer_maps: Sequence[torch.Tensor], dets: Sequence[Sequence], fuse: str,
                         size: tuple[int, int], letterboxes, level_strides: Sequence[float],
                         projectors: ProjectorCache, device) -> list[torch.Tensor]:
    """Per image the fused signed maps (n_i, H, W) in [-1, 1]: input space, or original space with letterboxes.

    layer_maps: per layer (jobs, h_l, w_l) raw maps (one job per detection), jobs in detection order over the batch.
    """
    out, i = [], 0
    for b, image_dets in enumerate(dets):
        lb = None if letterboxes is None else letterboxes[b]
        n = len(image_dets)
        proj = projectors.get(size, lb, device)
        if n == 0:
            out.append(torch.zeros((0, *proj.out_size), device=device))
            continue
        maps = [torch.nan_to_num(m[i:i + n].float()) for m in layer_maps]
        i += n
        if fuse == "origin" and len(maps) > 1:
            log_layer = torch.tensor([math.log2(size[0] / m.shape[-2]) for m in maps])
            log_job = torch.tensor([math.log2(level_strides[d.level]) for d in image_dets])
            pick = (log_job[:, None] - log_layer[None]).abs().argmin(1)
            fused = torch.zeros((n, *proj.out_size), device=maps[0].device)
            for k, m in enumerate(maps):
                rows = (pick == k).nonzero().view(-1).to(m.device)
                if len(rows):
                    fused[rows] = proj.one(m[rows])
        else:  # sum (and aligned, one map): resizing is linear, so the layers add after it
            fused = None
            for m in maps:
                up = proj.one(m)
                fused = up if fused is None else fused.add_(up)
        out.append(scale_signed_(fused))
    return out
