"""Defaults chosen by measurement on the bundled demo detectors (README, "Choosing the defaults").

`aalayercam` (LayerCAM, each layer's map low-passed by one cell of its grid) on the backbone's stride-4
stage gated by its stage outputs (`fine+backbone`, `gate`): its peak lands on the small mark that decides
the class (evidence benchmark, `demo-marks`), it keeps the localisation of the shape scenes (`demo-v8`,
`demo-26`), and, unlike the earlier `ssgradcam++` default, a JPEG re-save or a 2-px shift of the image
barely changes it (stability benchmark). `PRESETS` name other points of that trade.

A module of its own, with no imports (two small functions), so that the command line can show them without torch.
"""

DEFAULT_METHOD = "aalayercam"
DEFAULT_LAYERS = "fine+backbone"
DEFAULT_FUSE = "gate"

# Targets whose maps another method follows better (`method=None` picks it): a segmentation model's
# `mask` target is a mean over the instance's whole mask, and ssgradcam++'s per-channel sensitivity
# follows the mask where LayerCAM spreads (8 held-out demo-seg scenes, 32 instances: energy in the
# mask 0.65 against aalayercam's 0.52 and a uniform box's 0.62).
TARGET_METHODS = {"mask": "ssgradcam++"}


def default_method(target) -> str:
    """The method used when none is given: `DEFAULT_METHOD`, or the one `TARGET_METHODS` names for `target`."""
    return TARGET_METHODS.get(target, DEFAULT_METHOD) if isinstance(target, str) else DEFAULT_METHOD


# Named points of the evidence / stability / cost trade (`Explainer(preset=...)`, `--preset`): method,
# layers, fuse. "stable" is the default; "evidence" LayerCAM without the low-pass (the sharpest peak on
# the deciding mark, but a 2-px shift changes its maps more); "fast" the neck-only default of before the
# evidence benchmark (cheapest and stable, but blind to evidence smaller than its stride-8 grid).
PRESETS = {
    "stable": ("aalayercam", "fine+backbone", "gate"),
    "evidence": ("layercam", "fine+backbone", "gate"),
    "fast": ("hirescam", "neck", "sum"),
}


def preset_settings(preset: str, method, layers, fuse) -> tuple:
    """(method, layers, fuse) with the known preset `preset` filling those left unset (None) or at their
    defaults; explicitly chosen ones win (`Explainer(preset=...)` checks the name, `--preset` its choices)."""
    p_method, p_layers, p_fuse = PRESETS[preset]
    return (p_method if method in (None, DEFAULT_METHOD) else method, p_layers if layers == DEFAULT_LAYERS else layers,
            p_fuse if fuse == DEFAULT_FUSE else fuse)


# The largest model input size (`imgsz`, pixels, long side) accepted: an 8K frame (7680 x 4320) fits at its
# native resolution. Memory grows with imgsz squared: explaining one image with the small bundled detector
# takes about 0.7 GB at 1280 (measured), so about 30 GB at 8192, and a larger size would not fit in memory.
MAX_IMGSZ = 8192
