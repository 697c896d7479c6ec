"""yolocam: per-detection Grad-CAM-family heatmaps for ultralytics YOLO detectors.

The package is laid out in data-flow order (README, "Layout"): `inputs` -> `model` -> `cam` ->
`output` -> `explain` -> `evaluation` -> `cli`, with `demo` (scenes and bundled detectors) beside
`inputs`. The public names below are imported on first use, so `import yolocam` (and the
command line's `--help`) does not load torch.
"""

from __future__ import annotations

import importlib

from . import _offline  # noqa: F401  (first: sets ultralytics' offline switches before anything imports it)
from . import _aliases
from .defaults import DEFAULT_FUSE, DEFAULT_LAYERS, DEFAULT_METHOD
from .errors import YolocamError

__version__ = "0.1.0"

_aliases.install(__name__)

# public name -> (module relative to the package, attribute or None for the module itself)
_LAZY = {
    "Explainer": ("explain.explainer", "Explainer"),
    "ImageExplanation": ("output.results", "ImageExplanation"),
    "DetectionExplanation": ("output.results", "DetectionExplanation"),
    "load_output": ("output.reader", "load_output"),
    "list_methods": ("cam.methods", "list_methods"),
    "register_method": ("cam.methods", "register_method"),
    "list_models": ("demo.models", "list_models"),
    "list_targets": ("model.targets", "list_targets"),
    "validate": ("evaluation.validation", "validate"),
}

__all__ = [
    "Explainer", "ImageExplanation", "DetectionExplanation", "YolocamError", "list_methods", "list_models",
    "list_targets", "register_method", "load_output", "validate", "DEFAULT_METHOD", "DEFAULT_LAYERS",
    "DEFAULT_FUSE",
]


def __getattr__(name: str):
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(f".{module}", __name__), attr)
        globals()[name] = value
        return value
    if name in _aliases.OLD_PATHS:  # yolocam.metrics, yolocam.training, ... (old module paths)
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'yolocam' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | set(_aliases.OLD_PATHS))
