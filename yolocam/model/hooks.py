"""Forward hooks on the target layers: capture their outputs, or hand back live ones in a replay."""

from __future__ import annotations

import threading
from typing import Sequence

import torch

from .layers import TargetLayer, flatten_output, rebuild_output


class LayerHooks:
    """Forward hooks on the target modules; a context manager that always removes them.

    In capture mode each hook stores the module's output detached. In replay mode it stores the
    live output, turning tensors that carry no graph into leaves that require grad (so gradients
    can be taken w.r.t. them), and adds `noise` to the first target's output when asked: one
    pattern per `noise_seed`, drawn from a generator of its own (never torch's global random state)
    and shared by every batch row, scaled by each row's range. A job's noise is therefore the same
    whatever strategy, chunk or batch of images it is replayed in.

    All state is the call's own: hooks act only on forward passes run by the thread that
    registered them, so the same model running on another thread meanwhile neither feeds nor
    is changed by them.
    """

    def __init__(self, layers: Sequence[TargetLayer]):
        self.layers = list(layers)
        self.handles: list = []
        self.outputs: dict[int, object] = {}
        self.replay = False
        self.noise = 0.0
        self.noise_seed = 0
        self.thread: int | None = None

    def __enter__(self) -> "LayerHooks":
        self.thread = threading.get_ident()
        for k, layer in enumerate(self.layers):
            self.handles.append(layer.module.register_forward_hook(self._make_hook(k)))
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def remove(self) -> None:
        """Remove every hook; safe to call twice."""
        while self.handles:
            self.handles.pop().remove()

    def _make_hook(self, k: int):
        def hook(module, inputs, output):
            if threading.get_ident() != self.thread:
                return None  # another thread's forward pass: not ours
            if not self.replay:
                self.outputs[k] = rebuild_output(output, [t.detach() for t in flatten_output(output)])
                return None
            live = [self.prepare(t, noisy=(k == 0), part=i) for i, t in enumerate(flatten_output(output))]
            self.outputs[k] = rebuild_output(output, live)
            return self.outputs[k]

        return hook

    def prepare(self, t: torch.Tensor, noisy: bool, part: int = 0) -> torch.Tensor:
        """A replayed target tensor (the `part`-th of its layer's output): a grad-requiring leaf if it has
        no graph; plus noise if asked."""
        if not t.requires_grad and t.is_floating_point():
            t = t.detach().requires_grad_(True)
        if noisy and self.noise > 0:
            generator = torch.Generator(device=t.device)
            generator.manual_seed(self.noise_seed * 100 + part)
            draw = torch.randn((1, *t.shape[1:]), generator=generator, device=t.device, dtype=t.dtype)
            rows = t.detach().reshape(t.shape[0], -1)
            span = (rows.amax(1) - rows.amin(1)).clamp(min=1e-12).view(-1, *[1] * (t.ndim - 1))
            t = t + draw * (self.noise * span)
        return t
