"""Defaults chosen by measurement on the bundled demo detectors (README, "Choosing the defaults").

`ssgradcam++` on the backbone's stride-4 stage gated by its stage outputs (`fine+backbone`, `gate`):
its peak lands on the small mark that decides the class (evidence benchmark, `demo-marks`) while
keeping the localisation of the shape scenes (`demo-v8`, `demo-26`).

A module of its own, with no imports, so that the command line can show them without torch.
"""

DEFAULT_METHOD = "ssgradcam++"
DEFAULT_LAYERS = "fine+backbone"
DEFAULT_FUSE = "gate"

# The largest model input size (`imgsz`, pixels, long side) accepted: an 8K frame (7680 x 4320) fits at its
# native resolution. Memory grows with imgsz squared: explaining one image with the small bundled detector
# takes about 0.7 GB at 1280 (measured), so about 30 GB at 8192, and a larger size would not fit in memory.
MAX_IMGSZ = 8192
