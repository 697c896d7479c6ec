"""CAM weightings, chosen by name from a small registry.

A method maps activations A (N, C, H, W) and gradients G (S, N, C, H, W) — S gradient
samples, 1 except for SmoothGrad methods — to a raw map (N, H, W). Rectification and
normalisation happen later (in `fusion.py`), so a method returns signed evidence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..errors import YolocamError
from .catalog import describe

CamFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Method:
    """A registered method: `fn(acts, grads) -> (N, H, W)`.

    needs_gradients: False for image-level methods (EigenCAM) that skip the backward pass.
    samples / noise: SmoothGrad sample count and noise std (fraction of the activation range).
    smooth: standard deviation (cells of each layer's grid) of the Gaussian low-pass applied to each layer's
        map before fusion (0: none); `Explainer(smooth=...)` overrides it for any method.
    pointwise: the map at a cell is a function of that cell's activations and gradients only, zero where the
        gradients are: a box replayed on a window gets its map computed on the window alone (`engine.py`).
    black_box: True for methods that run the model on perturbed images instead (no layers, no engine).
    description: one line for `yolocam methods` (built-in methods: from `catalog.py`, torch-free).
    """

    name: str
    fn: CamFn
    needs_gradients: bool = True
    samples: int = 1
    noise: float = 0.0
    instance_specific: bool = True
    description: str = ""
    black_box: bool = False  # needs only the model's outputs on perturbed inputs (D-RISE: `drise.py`)
    smooth: float = 0.0  # Gaussian low-pass (cells) of each layer's map before fusion (`fusion.smooth_maps`)
    pointwise: bool = False  # the map at a cell reads only that cell's A and G, and is 0 where G is (window maps)

    def __call__(self, acts: torch.Tensor, grads: torch.Tensor | None) -> torch.Tensor:
        return self.fn(acts, grads)


_REGISTRY: dict[str, Method] = {}
_ALIASES: dict[str, str] = {}


def register_method(name: str, aliases: tuple[str, ...] = (), **options) -> Callable[[CamFn], CamFn]:
    """Decorator: register `fn(acts, grads) -> (N, H, W)` under `name` (and `aliases`)."""

    def deco(fn: CamFn) -> CamFn:
        if name in _REGISTRY or name in _ALIASES:
            raise YolocamError(f"method {name!r} is already registered")
        if not options.get("description") and describe(name) is not None:
            options["description"] = describe(name)[1]
        _REGISTRY[name] = Method(name, fn, **options)
        for alias in aliases:
            _ALIASES[alias] = name
        return fn

    return deco


def list_methods() -> list[str]:
    """Names accepted by `get_method` (registered names, then aliases)."""
    return list(_REGISTRY) + list(_ALIASES)


def get_method(name: str | Method) -> Method:
    if isinstance(name, Method):
        return name
    key = _ALIASES.get(name, name) if isinstance(name, str) else None
    if key not in _REGISTRY:
        raise YolocamError(f"unknown method {name!r}; expected one of {', '.join(list_methods())}")
    return _REGISTRY[key]


# --------------------------------------------------------------------- weights
def sample_mean(grads: torch.Tensor) -> torch.Tensor:
    """Mean over the sample axis: (S, N, C, H, W) -> (N, C, H, W); a view when S == 1."""
    return grads[0] if grads.shape[0] == 1 else grads.mean(0)


def gradcam_weights(grads: torch.Tensor) -> torch.Tensor:
    """Grad-CAM channel weights: spatial mean of G. (S, N, C, H, W) -> (N, C, 1, 1)."""
    return sample_mean(grads).mean((-2, -1), keepdim=True)


def gradcampp_weights(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++ weights as in the paper: w_c = sum_ij alpha_ij relu(g_ij).

    alpha_ij = g_ij^2 / (2 g_ij^2 + g_ij^3 * sum_ab A_ab), and 0 where the denominator is 0.
    With S > 1 samples the powers of g are averaged over samples (SmoothGrad-CAM++).
    """
    g1, g2, g3 = sample_mean(grads), sample_mean(grads.pow(2)), sample_mean(grads.pow(3))
    total = acts.sum((-2, -1), keepdim=True)
    denom = 2 * g2 + g3 * total
    alpha = torch.where(denom != 0, g2 / torch.where(denom != 0, denom, torch.ones_like(denom)), torch.zeros_like(g2))
    return (alpha * g1.clamp(min=0)).sum((-2, -1), keepdim=True)


def spatial_sensitivity(grads: torch.Tensor) -> torch.Tensor:
    """|g| / max_ij |g| per channel, in [0, 1] (0 for channels with no gradient). -> (N, C, H, W)."""
    mag = sample_mean(grads).abs()
    peak = mag.amax((-2, -1), keepdim=True)
    return mag / peak.clamp(min=torch.finfo(mag.dtype).tiny)


def _first_component(x: torch.Tensor) -> torch.Tensor:
    """Projection of each position's channel vector on the first principal axis. (N, C, H, W) -> (N, H, W).

    The sign is chosen so the map correlates positively with the channel-mean of `x`.
    """
    n, c, h, w = x.shape
    flat = x.reshape(n, c, h * w).transpose(1, 2).float()  # (N, HW, C)
    centred = flat - flat.mean(1, keepdim=True)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    proj = centred @ vh[:, 0, :, None]  # (N, HW, 1)
    ref = flat.mean(2, keepdim=True)
    ref = ref - ref.mean(1, keepdim=True)
    sign = torch.sign((proj * ref).sum(1, keepdim=True))
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    return (proj * sign).view(n, h, w).to(x.dtype)


# --------------------------------------------------------------------- methods
@register_method("gradcam", instance_specific=False)
def gradcam(acts, grads):
    return (gradcam_weights(grads) * acts).sum(1)


@register_method("gradcam++", instance_specific=False)
def gradcampp(acts, grads):
    return (gradcampp_weights(acts, grads) * acts).sum(1)


@register_method("xgradcam", instance_specific=False)
def xgradcam(acts, grads):
    g = sample_mean(grads)
    total = acts.sum((-2, -1), keepdim=True)
    weights = (g * acts).sum((-2, -1), keepdim=True) / (total + 1e-7)
    return (weights * acts).sum(1)


@register_method("layercam", pointwise=True)
def layercam(acts, grads):
    return (sample_mean(grads).clamp(min=0) * acts).sum(1)


@register_method("aalayercam", smooth=1.0, pointwise=True)
def aalayercam(acts, grads):
    """LayerCAM's map; the engine low-passes it at each layer's grid (sigma one cell): a stride-4 layer's
    gradient carries the checkerboard of the strided convolutions after it, which a 1-2 px shift or a JPEG
    re-save rewrites; the filter keeps what is stable (README, "Choosing the defaults")."""
    return (sample_mean(grads).clamp(min=0) * acts).sum(1)


@register_method("hirescam", aliases=("odam",), pointwise=True)
def hirescam(acts, grads):
    return (sample_mean(grads) * acts).sum(1)


@register_method("eigencam", needs_gradients=False, instance_specific=False)
def eigencam(acts, grads):
    """Image-level: the first principal component of the activations; the same map for every box."""
    return _first_component(acts)


@register_method("eigengradcam", instance_specific=False)
def eigengradcam(acts, grads):
    return _first_component(acts * sample_mean(grads))


@register_method("smoothgradcam++", samples=8, noise=0.1, instance_specific=False)
def smoothgradcampp(acts, grads):
    return (gradcampp_weights(acts, grads) * acts).sum(1)


@register_method("ssgradcam")
def ssgradcam(acts, grads):
    return (gradcam_weights(grads) * spatial_sensitivity(grads) * acts).sum(1)


@register_method("ssgradcam++")
def ssgradcampp(acts, grads):
    return (gradcampp_weights(acts, grads) * spatial_sensitivity(grads) * acts).sum(1)


@register_method("drise", needs_gradients=False, black_box=True)
def drise(acts, grads):
    """Black-box: computed by `drise.py` from masked forward passes, never from activations."""
    raise YolocamError("method 'drise' is black-box: it runs through Explainer (masked passes), not the CAM engine")
