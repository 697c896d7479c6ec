"""Defaults chosen by measurement on the bundled demo detectors (README, "Choosing the defaults").

`aalayercam` (LayerCAM, each layer's map low-passed by one cell of its grid) on the backbone's stride-4
stage gated by its stage outputs (`fine+backbone`, `gate`): its peak lands on the small mark that decides
the class (evidence benchmark, `demo-marks`), it keeps the localisation of the shape scenes (`demo-v8`,
`demo-26`), and, unlike the earlier `ssgradcam++` default, a JPEG re-save or a 2-px shift of the image
barely changes it (stability benchmark). `PRESETS` name other points of that trade.

A module of its own, with no imports, so that the command line can show them without torch.
"""

DEFAULT_METHOD = "aalayercam"
DEFAULT_LAYERS = "fine+backbone"
DEFAULT_FUSE = "gate"

# Named points of the evidence / stability / cost trade (`Explainer(preset=...)`, `--preset`): method,
# layers, fuse. "stable" is the default; "evidence" LayerCAM without the low-pass (the sharpest peak on
# the deciding mark, but a 2-px shift changes its maps more); "fast" the neck-only default of before the
# evidence benchmark (cheapest and stable, but blind to evidence smaller than its stride-8 grid).
PRESETS = {
    "stable": ("aalayercam", "fine+backbone", "gate"),
    "evidence": ("layercam", "fine+backbone", "gate"),
    "fast": ("hirescam", "neck", "sum"),
}

# The largest model input size (`imgsz`, pixels, long side) accepted: an 8K frame (7680 x 4320) fits at its
# native resolution. Memory grows with imgsz squared: explaining one image with the small bundled detector
# takes about 0.7 GB at 1280 (measured), so about 30 GB at 8192, and a larger size would not fit in memory.
MAX_IMGSZ = 8192
