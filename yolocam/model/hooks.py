"""Forward hooks on the target layers: capture their outputs, or hand back live ones in a replay."""

from __future__ import annotations

from typing import Sequence

import torch

from .layers import TargetLayer, flatten_output, rebuild_output


class LayerHooks:
    """Forward hooks on the target modules; a context manager that always removes them.

    In capture mode each hook stores the module's output detached. In replay mode it stores the
    live output, turning tensors that carry no graph into leaves that require grad (so gradients
    can be taken w.r.t. them), and adds `noise` to the first target's output when asked.
    """

    def __init__(self, layers: Sequence[TargetLayer]):
        self.layers = list(layers)
        self.handles: list = []
        self.outputs: dict[int, object] = {}
        self.replay = False
        self.noise = 0.0

    def __enter__(self) -> "LayerHooks":
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
            if not self.replay:
                self.outputs[k] = rebuild_output(output, [t.detach() for t in flatten_output(output)])
                return None
            live = [self.prepare(t, noisy=(k == 0)) for t in flatten_output(output)]
            self.outputs[k] = rebuild_output(output, live)
            return self.outputs[k]

        return hook

    def prepare(self, t: torch.Tensor, noisy: bool) -> torch.Tensor:
        """A replayed target tensor: a grad-requiring leaf if it has no graph; plus noise if asked."""
        if not t.requires_grad and t.is_floating_point():
            t = t.detach().requires_grad_(True)
        if noisy and self.noise > 0:
            span = (t.detach().amax() - t.detach().amin()).clamp(min=1e-12)
            t = t + torch.randn_like(t) * (self.noise * span)
        return t
