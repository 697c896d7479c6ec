"""Which activations are explained: resolve a layer spec, and turn outputs into (B, C, H, W).

Specs: `neck` (the neck's blocks), `head` (the head's inputs), `backbone` (the stage outputs
that feed the neck), `fine` (the backbone's stride-4 stage, where small parts are still resolved), several
of these joined by '+' (`fine+neck`), a list of indices of `model.model`, or a list of modules (top-level
layers or any sub-module of one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import YolocamError
from .adapter import ModelAdapter

LAYER_SETS = ("neck", "head", "backbone", "fine")


@dataclass(frozen=True)
class TargetLayer:
    """A module whose output is explained; `top` is the index of the `model.model` layer holding it."""

    name: str
    module: nn.Module
    top: int

    @property
    def is_top_level(self) -> bool:
        return self.name.isdigit()


def resolve_layers(adapter: ModelAdapter, spec) -> list[TargetLayer]:
    """Resolve `spec` (see module docstring) to target layers, ordered by position in the network."""
    n = len(adapter.layers) - 1  # the head itself is not a target layer
    valid = f"1..{n - 1}" if n > 1 else "none"
    if isinstance(spec, str):
        groups = adapter.layer_groups()
        names = spec.split("+")  # named sets joined by '+', e.g. 'fine+neck'
        if not all(name in groups for name in names):
            raise YolocamError(f"unknown layers {spec!r}; expected one of {', '.join(LAYER_SETS)} (or several "
                               f"joined by '+', e.g. fine+neck), a list of layer indices ({valid}) or a list of modules")
        spec = sorted({i for name in names for i in groups[name]})
    if isinstance(spec, (int, nn.Module)):
        spec = [spec]
    if not isinstance(spec, Sequence) or len(spec) == 0:
        raise YolocamError(f"layers: expected a name ({', '.join(LAYER_SETS)}), indices or modules, got {spec!r}")
    owner = {id(m): (i, name) for i in range(n) for name, m in adapter.layers[i].named_modules()}
    out: list[TargetLayer] = []
    for item in spec:
        if isinstance(item, bool) or not isinstance(item, (int, nn.Module)):
            raise YolocamError(f"layers: expected int indices or nn.Modules, got {type(item).__name__}")
        if isinstance(item, int):
            if not 0 <= item < n:
                raise YolocamError(f"layer index {item} out of range: the layers that can be explained are {valid} "
                                   f"(layer {n} is the head)")
            out.append(TargetLayer(str(item), adapter.layers[item], item))
        else:
            if id(item) not in owner:
                raise YolocamError(f"layers: module {type(item).__name__} is not part of this model "
                                   f"(or is the head, whose outputs are the targets)")
            i, sub = owner[id(item)]
            out.append(TargetLayer(str(i) if not sub else f"{i}.{sub}", item, i))
        if out[-1].top == 0:
            raise YolocamError(f"layer 0 ({type(adapter.layers[0]).__name__}) cannot be explained: it reads the input "
                               f"image itself, and explanations re-run the layers from the earliest explained one on "
                               f"earlier layers' outputs; choose layers {valid} (layer 1 is the earliest)")
    seen, unique = set(), []
    for t in sorted(out, key=lambda t: t.top):
        if id(t.module) not in seen:
            seen.add(id(t.module))
            unique.append(t)
    return unique


# --------------------------------------------------------------- reshape transforms
def flatten_output(out) -> list[torch.Tensor]:
    """The tensors of a layer output (a tensor, a list/tuple, or a dict of tensors), in order."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        flat = [t for o in out for t in flatten_output(o)]
        if flat:
            return flat
    raise YolocamError(f"layer output: expected tensors (or a list/tuple/dict of them), got {type(out).__name__}")


def rebuild_output(template, tensors: Sequence[torch.Tensor]):
    """Inverse of `flatten_output`: the same structure as `template` holding `tensors`."""
    return _build(template, iter(tensors))


def _build(t, it):
    """`rebuild_output`'s recursion: a module-level function, so no closure cycle keeps `tensors` alive
    until the garbage collector runs (per-box gradients of a replay were held that way)."""
    if isinstance(t, torch.Tensor):
        return next(it)
    if isinstance(t, dict):
        return {k: _build(v, it) for k, v in t.items()}
    return type(t)(_build(v, it) for v in t) if isinstance(t, tuple) else [_build(v, it) for v in t]


def align_levels(maps: Sequence[torch.Tensor], size: tuple[int, int] | None = None) -> torch.Tensor:
    """Multi-scale reshape: resize (B, C_l, H_l, W_l) maps to one grid and concatenate channels.

    The grid is `size` or the finest (largest) of the inputs; resizing is bilinear. Apply the same
    call to activations and to gradients so they stay aligned. -> (B, sum C_l, H, W).
    """
    if not maps:
        raise YolocamError("align_levels: expected at least one (B, C, H, W) tensor, got none")
    for m in maps:
        if m.ndim != 4:
            raise YolocamError(f"align_levels: expected (B, C, H, W) tensors, got shape {tuple(m.shape)}")
    if size is None:
        size = max((tuple(m.shape[-2:]) for m in maps), key=lambda s: s[0] * s[1])
    resized = [m if tuple(m.shape[-2:]) == tuple(size) else
               F.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in maps]
    return torch.cat(resized, dim=1)


def default_reshape(out) -> torch.Tensor:
    """(B, C, H, W) as is; (B, C, H, W) lists/tuples/dicts aligned with `align_levels`; (B, N, C) token maps rejected."""
    if isinstance(out, torch.Tensor):
        if out.ndim != 4:
            raise YolocamError(f"layer output has shape {tuple(out.shape)}; expected (B, C, H, W) — "
                               f"pass reshape_transform= to turn it into one")
        return out
    return align_levels(flatten_output(out))


ReshapeTransform = Callable[[object], torch.Tensor]
