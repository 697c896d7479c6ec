"""yolocam: per-detection Grad-CAM-family heatmaps for ultralytics YOLO detectors."""

from . import _offline  # noqa: F401  (first: keeps ultralytics offline)
from .errors import YolocamError
from .explainer import DEFAULT_FUSE, DEFAULT_LAYERS, DEFAULT_METHOD, Explainer
from .export import load_output
from .methods import list_methods, register_method
from .models import list_models
from .results import DetectionExplanation, ImageExplanation
from .targets import list_targets

__version__ = "0.1.0"

__all__ = [
    "Explainer", "ImageExplanation", "DetectionExplanation", "YolocamError", "list_methods", "list_models",
    "list_targets", "register_method", "load_output", "DEFAULT_METHOD", "DEFAULT_LAYERS", "DEFAULT_FUSE",
]


def __getattr__(name):
    if name in ("metrics", "validate"):
        import importlib

        mod = importlib.import_module(".validation" if name == "validate" else f".{name}", __name__)
        return mod if name == "metrics" else mod.validate
    raise AttributeError(f"module 'yolocam' has no attribute {name!r}")
