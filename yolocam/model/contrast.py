"""Contrastive targets: why this class and not that one.

`contrast`: the detected class's logit minus the runner-up's at the same anchor (the highest other
class logit there); `contrast:NAME` or `contrast:INDEX`: minus the named class's logit. The other
class is chosen once, when the detections are selected (`prepare`, from the captured forward
pass), and stored on the detection (`Detection.versus`), so the target is a difference of two
fixed logits: differentiable, and the same for every replay (SmoothGrad noise, head crops).

A detection of the named class itself has nothing to contrast: its map is zero and its `reason`
says so (`refusal`); the explanation of the other detections goes on.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import torch

from ..errors import YolocamError
from .detections import Detection
from .targets import PARAMETRISED, Jobs, Target


class Contrast(Target):
    """logit(detected class) - logit(other class) at the detection's anchor; see the module docstring."""

    local = True
    needs_boxes = False

    def __init__(self, spec: str | None = None, index: int | None = None):
        self.spec, self.index = spec, index
        self.name = "contrast" if spec is None else f"contrast:{spec}"

    def bind(self, names: dict[int, str]) -> "Contrast":
        """This target with `spec` resolved against the model's class names (YolocamError for an unknown one)."""
        bound = Contrast(self.spec, None if self.spec is None else resolve_class(self.spec, names))
        bound.local = self.local
        return bound

    def prepare(self, logits: torch.Tensor, dets: Sequence[Sequence[Detection]]) -> list[list[Detection]]:
        """The detections with `versus` set: the named class, or the runner-up at each detection's anchor.

        logits: (B, A, nc) raw class logits of the forward pass the detections were selected from.
        """
        out = []
        for image_dets in dets:
            if not image_dets:
                out.append([])
                continue
            if self.index is not None:
                versus = [self.index] * len(image_dets)
            else:
                rows = torch.tensor([d.image for d in image_dets], device=logits.device)
                anchors = torch.tensor([d.anchor for d in image_dets], device=logits.device)
                cls = torch.tensor([d.cls for d in image_dets], device=logits.device)
                versus = runner_up(logits[rows, anchors].detach().float(), cls).tolist()
            out.append([replace(d, versus=int(v)) for d, v in zip(image_dets, versus)])
        return out

    def refusal(self, det: Detection) -> str | None:
        """Why detection `det` has no contrastive map (it is of the contrasted class itself), else None."""
        if det.versus is None or det.versus != det.cls:
            return None
        if self.spec is None:
            return "target 'contrast': a single-class model has no runner-up class to contrast with; the map is zero"
        return (f"target {self.name!r} contrasts a class with itself: this detection is of class {self.spec!r}; "
                f"its map is zero (use target='contrast' for its runner-up class, or contrast:<another class>)")

    def __call__(self, outputs, jobs: Jobs):
        if jobs.versus is None:
            raise YolocamError(f"target {self.name!r}: the detections carry no contrasted class (Contrast.prepare)")
        rows = torch.arange(len(jobs.detections), device=outputs.logits.device)
        own = outputs.logits[rows, jobs.anchor, jobs.cls]
        other = outputs.logits[rows, jobs.anchor, jobs.versus]
        return own - other


def runner_up(logits: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
    """Per row the highest-logit class other than `cls`: logits (n, nc), cls (n,) -> (n,) long.

    With a single class there is no other: the row's own class (a zero target)."""
    if logits.shape[-1] < 2:
        return cls.clone()
    masked = logits.clone()
    masked[torch.arange(len(cls), device=logits.device), cls] = float("-inf")
    return masked.argmax(-1)


def resolve_class(spec: str, names: dict[int, str]) -> int:
    """A class index from a name or an index (as text) of the model's `names`; one-line YolocamError else."""
    listed = ", ".join(f"{k}={v}" for k, v in sorted(names.items()))
    text = spec.strip()
    if text.lstrip("-").isdigit():
        index = int(text)
        if index not in names:
            raise YolocamError(f"target 'contrast:{spec}': class index {index} is not one of this model's "
                               f"classes ({listed})")
        return index
    hits = [k for k, v in sorted(names.items()) if v == text] or \
        [k for k, v in sorted(names.items()) if str(v).casefold() == text.casefold()]
    if not hits:
        raise YolocamError(f"target 'contrast:{spec}': unknown class {text!r}; this model's classes are {listed}")
    return hits[0]


def parse_contrast(spec: str) -> Contrast:
    """`contrast` or `contrast:NAME|INDEX` -> an unbound `Contrast` (names are resolved when a model is known)."""
    key = spec.partition(":")[2].strip()
    if spec.strip() != "contrast" and not key:
        raise YolocamError("target 'contrast:' needs a class name or index, e.g. contrast:1 or contrast:ring "
                           "('contrast' alone contrasts with the runner-up class)")
    return Contrast(key or None)


def bind_contrast(target: Target, names: dict[int, str], task: str = "detect") -> Target:
    """`target` resolved against a model's class names when it is a `Contrast` (classification models:
    not local, the logits pool the whole image); any other target unchanged."""
    if not isinstance(target, Contrast):
        return target
    bound = target.bind(names)
    bound.local = task != "classify"
    return bound


def prepare_detections(target: Target, logits: torch.Tensor, dets) -> list[list[Detection]]:
    """The detections a target reads: contrastive targets fix their other class here; else unchanged."""
    if isinstance(target, Contrast):
        return target.prepare(logits, dets)
    return [list(d) for d in dets]


PARAMETRISED["contrast"] = parse_contrast
