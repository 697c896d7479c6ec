"""Which engine computes a method's maps: one registry, and the interface every engine has.

An engine is a class with
- `Settings`: a frozen dataclass of its settings, whose `check(method, target)` refuses bad values in one
  line before any model is loaded;
- `from_settings(adapter, method, target, settings, imgsz)`: the engine on a loaded model, the checks that
  need the model done (layers resolved, memory for the largest input `imgsz` x `imgsz`);
- `run(x, conf, iou, classes, max_det, select=None, letterboxes=None, progress=None) -> EngineResult`:
  per image of the batch `x` its detections, their maps and why a map is zero, as often as asked;
- `steps(images) -> (n, unit)`: what `run` reports to `progress` for a batch, and `progress`, whether
  the caller should show it (None: show, False: silent).

`ENGINES` maps each kind of method to its engine: gradient methods to `CamEngine` (`CamSettings`),
black-box ones (`drise`) to `DriseEngine` (`DriseSettings`). `engine_settings` splits `Explainer`'s flat
keywords into the chosen engine's settings; `build_engine` builds it.
"""

from __future__ import annotations

from dataclasses import fields

from .drise import DriseEngine, DriseSettings
from .engine import CamEngine, CamSettings
from .methods import Method

__all__ = ["ENGINES", "CamEngine", "CamSettings", "DriseEngine", "DriseSettings", "build_engine", "engine_class",
           "engine_kind", "engine_settings"]

ENGINES: dict[str, type] = {"gradient": CamEngine, "black-box": DriseEngine}


def engine_kind(method: Method) -> str:
    """`black-box` for methods that need no gradients (`drise`), else `gradient`."""
    return "black-box" if method.black_box else "gradient"


def engine_class(method: Method) -> type:
    """The engine that computes `method`'s maps."""
    return ENGINES[engine_kind(method)]


def settings_from(cls: type, keywords: dict):
    """An instance of the settings dataclass `cls` from those `keywords` that are its fields."""
    return cls(**{f.name: keywords[f.name] for f in fields(cls) if f.name in keywords})


def engine_settings(method: Method, target, **keywords):
    """The settings of `method`'s engine from flat keywords (each engine takes its own fields), checked.

    The CAM settings are checked whatever the method: a fuse name, the memory bound, and a sign that the
    method must be able to keep (D-RISE's maps, non-negative, keep none); a D-RISE value is checked only
    for `drise`, the CAM engine's strategy and smoothing only when it is built (`CamEngine.from_settings`).
    """
    known = {f.name for cls in ENGINES.values() for f in fields(cls.Settings)}
    unknown = sorted(set(keywords) - known)
    if unknown:
        raise TypeError(f"unknown engine settings: {', '.join(unknown)}")
    cam = settings_from(CamSettings, keywords).check(method, target)
    settings_cls = engine_class(method).Settings
    return cam if settings_cls is CamSettings else settings_from(settings_cls, keywords).check(method, target)


def build_engine(adapter, method: Method, target, settings, imgsz: int):
    """`method`'s engine on the loaded model's `adapter` (a `ModelAdapter`, or an `ExportedModel` for
    black-box methods), for inputs of up to `imgsz` x `imgsz`."""
    return engine_class(method).from_settings(adapter, method, target, settings, imgsz)
