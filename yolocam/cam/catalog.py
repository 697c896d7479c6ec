"""One-line descriptions of the built-in CAM methods, without importing torch.

`yolocam methods` prints these, so the table lives in a module with no imports; `methods.py`
(the registry, which needs torch) reads it too (`describe_method`), and a test checks that both
list the same methods.

Scope: `per-box` maps weight each position by the box's own gradient, so they show that one
object; `per-box, class-wide` maps start from the box's gradient but pool it per channel, so they
light every object that shares its features; `image-level` maps ignore the box (one map per image);
`black-box` maps need no gradients (any exported backend): all boxes of an image from one set of
masked forward passes.
"""

from __future__ import annotations

PER_BOX, CLASS_WIDE, IMAGE_LEVEL = "per-box", "per-box, class-wide", "image-level"
BLACK_BOX = "per-box, black-box"

# name -> (scope, one-line description); aliases map to their method's name
METHODS: dict[str, tuple[str, str]] = {
    "gradcam": (CLASS_WIDE, "Grad-CAM: activations weighted by their channel's mean gradient"),
    "gradcam++": (CLASS_WIDE, "Grad-CAM++: channel weights from positive gradients, the paper's alpha"),
    "xgradcam": (CLASS_WIDE, "XGrad-CAM: channel weights from gradients times normalised activations"),
    "layercam": (PER_BOX, "LayerCAM: activations times positive gradients, position by position"),
    "aalayercam": (PER_BOX, "anti-aliased LayerCAM: LayerCAM with each layer's map low-passed by one cell "
                            "(stable under re-saves and shifts)"),
    "hirescam": (PER_BOX, "HiResCAM (ODAM): activations times gradients, position by position"),
    "eigencam": (IMAGE_LEVEL, "EigenCAM: first principal component of the activations (no gradients)"),
    "eigengradcam": (CLASS_WIDE, "EigenGrad-CAM: first principal component of activations times gradients"),
    "smoothgradcam++": (CLASS_WIDE, "SmoothGrad-CAM++: Grad-CAM++ averaged over noisy copies of the activations"),
    "ssgradcam": (PER_BOX, "SS-Grad-CAM: Grad-CAM weights times each position's gradient sensitivity"),
    "ssgradcam++": (PER_BOX, "SS-Grad-CAM++: Grad-CAM++ weights times each position's gradient sensitivity"),
    "drise": (BLACK_BOX, "D-RISE: random masks weighted by how well each masked image still finds the box "
                         "(no gradients; any backend)"),
}
ALIASES: dict[str, str] = {"odam": "hirescam"}


def method_names() -> list[str]:
    """Built-in method names, then aliases (the order of `yolocam.list_methods()`)."""
    return list(METHODS) + list(ALIASES)


def describe(name: str) -> tuple[str, str] | None:
    """(scope, description) of a built-in method or alias, None for an unknown name."""
    return METHODS.get(ALIASES.get(name, name))
