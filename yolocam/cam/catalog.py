"""One-line descriptions of the built-in CAM methods, and the other names the command line checks before
torch loads (targets, fusions, layer sets), without importing torch.

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


# The names the registries accept, checked here without torch (the command line answers a typo at once);
# tests/test_fast_errors.py checks that they match `model.targets`, `cam.fusion` and `model.layers`.
TARGET_NAMES = ("class", "conf", "box", "all", "cluster", "mask")  # = model.targets.TARGETS
TARGET_FAMILIES = ("contrast", "keypoints")  # parametrised: contrast, contrast:CLASS, keypoint:K, keypoints
FUSIONS = ("sum", "max", "origin", "aligned", "gate")  # = cam.fusion.FUSIONS
LAYER_SETS = ("neck", "head", "backbone", "fine")  # = model.layers.LAYER_SETS


def check_method(name: str) -> str:
    """`name` when it is a built-in method or alias, else the registry's one-line YolocamError."""
    if describe(name) is None:
        from ..errors import YolocamError

        raise YolocamError(f"unknown method {name!r}; expected one of {', '.join(method_names())}")
    return name


def gradient_methods() -> list[str]:
    """The built-in methods without aliases and black-box ones (`--compare-methods all`)."""
    return [name for name, (scope, _) in METHODS.items() if scope != BLACK_BOX]


def check_target(spec: str) -> str:
    """`spec` when its name is a built-in target (the parametrised ones are checked in full once the model
    loads), else the registry's one-line YolocamError."""
    family, colon, param = (part.strip() for part in spec.partition(":"))
    from ..errors import YolocamError

    if colon and not param and family in ("contrast", "keypoint"):  # `contrast:` / `keypoint:` with nothing after
        raise YolocamError(f"target {spec!r} needs a class name or index after the colon, e.g. {family}:0")
    if spec in TARGET_NAMES or family in TARGET_FAMILIES or (family == "keypoint" and colon):
        return spec

    raise YolocamError(f"unknown target {spec!r}; expected one of {', '.join(TARGET_NAMES)}, contrast, "
                       "contrast:CLASS, keypoint:K, keypoints (pose models) or a callable")
