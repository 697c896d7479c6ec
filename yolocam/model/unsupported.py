"""Model kinds yolocam refuses up front, by the module types a model (or its YAML) holds.

Open-vocabulary detectors (YOLO-World, YOLOE) score boxes against text or visual prompt
embeddings that their forward pass takes as an extra input; RT-DETR decodes boxes with a
transformer instead of a per-anchor head. Neither has the anchor head yolocam explains.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from torch import nn

from ..errors import YolocamError

OPEN_VOCABULARY = ("WorldDetect", "YOLOEDetect", "YOLOESegment", "YOLOESegment26", "LRPCHead", "C2fAttn",
                   "ImagePoolingAttn")
TRANSFORMER_DECODERS = ("RTDETRDecoder",)


def module_types(module: nn.Module) -> set[str]:
    """Class names of every submodule of `module` and of their base classes."""
    return {cls.__name__ for m in module.modules() for cls in type(m).__mro__}


def yaml_module_types(cfg: str | Path) -> set[str]:
    """Module names a model YAML lists in its backbone and head (empty when it cannot be read)."""
    from ultralytics.nn.tasks import yaml_model_load

    try:
        d = yaml_model_load(str(cfg))
        layers = list(d.get("backbone") or []) + list(d.get("head") or [])
        return {str(layer[2]).rsplit(".", 1)[-1] for layer in layers}
    except Exception:  # a missing or malformed YAML: building the model reports it
        return set()


def refuse_unsupported(types: Iterable[str], name: str) -> None:
    """One clear line for an open-vocabulary (YOLO-World, YOLOE) or RT-DETR model among `types`."""
    types = set(types)
    found = [t for t in OPEN_VOCABULARY if t in types]
    if found:
        raise YolocamError(f"open-vocabulary models (YOLO-World, YOLOE) are not supported: {name} has "
                           f"{', '.join(found)}; expected a closed-set YOLO detector "
                           f"such as yolov8n.pt or yolo11n.pt")
    found = [t for t in TRANSFORMER_DECODERS if t in types]
    if found:
        raise YolocamError(f"RT-DETR models are not supported: {name} has an {found[0]} head (a transformer "
                           f"decoder, no per-anchor head); expected a YOLO detector such as yolov8n.pt or yolo11n.pt")
