"""Old import paths: before the package had sub-packages, every module sat at `yolocam.<name>`.

`import yolocam.metrics`, `from yolocam.layers import align_levels` and the like keep working: a
finder on `sys.meta_path` answers those names with the module at its new place (the same module
object, so there is one of each). Nothing is imported until such a name is asked for.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

OLD_PATHS = {
    "scenes": "demo.scenes", "models": "demo.models",
    "images": "inputs.images",
    "adapter": "model.adapter", "detections": "model.detections", "targets": "model.targets",
    "layers": "model.layers", "hooks": "model.hooks",
    "methods": "cam.methods", "fusion": "cam.fusion", "projection": "cam.projection", "windows": "cam.windows",
    "head_crops": "cam.head_crops", "engine": "cam.engine",
    "results": "output.results", "export": "output.export", "gallery": "output.gallery", "progress": "output.progress",
    "explainer": "explain.explainer", "pipeline": "explain.pipeline",
    "metrics": "evaluation.metrics", "report": "evaluation.report", "compare": "evaluation.compare",
    "validation": "evaluation.validation", "training": "evaluation.training",
    "bench": "cli.bench",
}


class _OldPathFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves `yolocam.<old name>` to `yolocam.<new place>`."""

    def __init__(self, package: str):
        self.prefix = package + "."
        self.originals: dict[str, object] = {}

    def find_spec(self, fullname, path=None, target=None):
        if fullname.startswith(self.prefix) and fullname[len(self.prefix):] in OLD_PATHS:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        module = importlib.import_module(self.prefix + OLD_PATHS[spec.name[len(self.prefix):]])
        self.originals[spec.name] = module.__spec__  # the import system overwrites it; put back below
        return module

    def exec_module(self, module) -> None:
        module.__spec__ = self.originals.pop(module.__spec__.name)


def install(package: str) -> None:
    """Put the finder for `package`'s old module paths on `sys.meta_path` (once)."""
    if not any(isinstance(f, _OldPathFinder) and f.prefix == package + "." for f in sys.meta_path):
        sys.meta_path.append(_OldPathFinder(package))
