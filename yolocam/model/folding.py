"""Convolutions with their batch norm folded in, for the duration of one explanation.

In eval mode an ultralytics `Conv` computes `act(bn(conv(x)))`, and the batch norm is an affine map per
output channel: `conv` with weights `w * s` and bias `beta - mean * s` (s = gamma / sqrt(var + eps)) gives
the same output up to float rounding, in one kernel instead of two, and its backward skips the batch norm's
(measured on `demo-v8`, CPU, one thread: about 10 % of an explanation). ultralytics' own `fuse()` does this
by rewriting the model; here the model is left alone: the folded weights are tensors of our own (float32 ones kept
`channels_last` on CPU, where oneDNN's convolutions run faster on that layout, another ~8 %), and each
folded module gets an instance `forward` for the duration, removed on exit.

Modules are left unfolded when anything could observe the difference: hooks on the module's `conv` or `bn`
(or any global module hook), a `bn` or `conv` that the caller names (a target layer), a batch norm in
training mode or without running statistics, non-zero padding modes, or a `forward` of the instance's own
(a model already fused by ultralytics has no `bn` left). Forward passes of other threads meanwhile run
the module's own forward.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as _module


def _conv_class():
    try:
        from ultralytics.nn.modules.conv import Conv
    except ImportError:  # pragma: no cover - ultralytics is a dependency
        return None
    return Conv


def foldable(m: nn.Module, keep: set[int]) -> bool:
    """Whether module `m` is a plain ultralytics `Conv` (`act(bn(conv(x)))`) whose batch norm can be folded
    without anyone seeing it; `keep`: ids of modules that must run as they are."""
    conv_cls = _conv_class()
    if conv_cls is None or not isinstance(m, conv_cls) or type(m).forward is not conv_cls.forward:
        return False
    conv, bn = getattr(m, "conv", None), getattr(m, "bn", None)
    if not isinstance(conv, nn.Conv2d) or not isinstance(bn, nn.BatchNorm2d) or "forward" in m.__dict__:
        return False
    if bn.training or bn.running_mean is None or bn.running_var is None or conv.padding_mode != "zeros":
        return False
    if id(conv) in keep or id(bn) in keep:
        return False
    return not any(_hooked(x) for x in (conv, bn))


def _hooked(m: nn.Module) -> bool:
    return bool(m._forward_hooks or m._forward_pre_hooks or getattr(m, "_backward_hooks", None)
                or getattr(m, "_backward_pre_hooks", None))


def _global_hooks() -> bool:
    names = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
             "_global_backward_pre_hooks")
    return any(bool(getattr(_module, n, None)) for n in names)


def folded_weights(m: nn.Module, channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) of `m.conv` with `m.bn` folded in, computed in at least float32, in the weight's dtype."""
    conv, bn = m.conv, m.bn
    with torch.no_grad():
        w = conv.weight
        work = torch.promote_types(w.dtype, torch.float32)
        var, mean = bn.running_var.to(work), bn.running_mean.to(work)
        gamma = torch.ones_like(var) if bn.weight is None else bn.weight.to(work)
        beta = torch.zeros_like(var) if bn.bias is None else bn.bias.to(work)
        scale = gamma / torch.sqrt(var + bn.eps)
        weight = (w.to(work) * scale.view(-1, 1, 1, 1)).to(w.dtype)
        bias = beta - mean * scale
        if conv.bias is not None:
            bias = bias + conv.bias.to(work) * scale
        bias = bias.to(w.dtype)
        if channels_last:
            weight = weight.contiguous(memory_format=torch.channels_last)
    return weight, bias


class BatchNormFolding:
    """Folded weights cached per module, recomputed when any tensor they come from changes (an optimiser step,
    `load_state_dict`: their version counters or storages move)."""

    def __init__(self):
        self._cache: dict[int, tuple[tuple, torch.Tensor, torch.Tensor]] = {}

    def weights(self, m: nn.Module, channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
        tensors = [m.conv.weight, m.conv.bias, m.bn.weight, m.bn.bias, m.bn.running_mean, m.bn.running_var]
        key = (channels_last, m.bn.eps) + tuple(
            None if t is None else (t.data_ptr(), t._version, t.dtype, t.device) for t in tensors)
        hit = self._cache.get(id(m))
        if hit is None or hit[0] != key:
            hit = self._cache[id(m)] = (key, *folded_weights(m, channels_last))
        return hit[1], hit[2]

    @contextlib.contextmanager
    def applied(self, model: nn.Module, keep: Iterable[nn.Module] = ()) -> Iterator[int]:
        """Fold every foldable `Conv` of `model` (module docstring) until exit; yields how many were folded.
        `keep`: modules whose own forward must run (their convolution and batch norm stay separate)."""
        keep_ids = {id(k) for k in keep}
        folded = []
        try:
            if not _global_hooks():
                for m in model.modules():
                    if foldable(m, keep_ids):
                        w = m.conv.weight  # oneDNN's float32 kernels only (float64 runs the reference ones either way)
                        channels_last = w.device.type == "cpu" and w.dtype == torch.float32
                        weight, bias = self.weights(m, channels_last)
                        m.forward = _folded_forward(m, weight, bias, threading.get_ident())
                        folded.append(m)
            yield len(folded)
        finally:
            for m in folded:
                m.__dict__.pop("forward", None)


def _folded_forward(m: nn.Module, weight: torch.Tensor, bias: torch.Tensor, thread: int):
    conv, act, own = m.conv, m.act, type(m).forward

    def forward(x):
        if threading.get_ident() != thread:  # another thread's pass: the module's own computation
            return own(m, x)
        return act(F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups))

    return forward
