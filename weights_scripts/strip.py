"""Strip a training checkpoint to an fp16 model-only file and place it in yolocam/demo/weights/.

Usage: python weights_scripts/strip.py /tmp/yolocam_runs/demo-v8/weights/last.pt yolocam/demo/weights/demo-v8.pt
"""

import argparse
from pathlib import Path

import _offline  # noqa: F401  (must precede ultralytics imports)
from ultralytics.utils.torch_utils import strip_optimizer

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("src")
    ap.add_argument("dst")
    a = ap.parse_args()
    Path(a.dst).parent.mkdir(parents=True, exist_ok=True)
    strip_optimizer(a.src, a.dst)  # EMA weights -> model, fp16, drops optimizer/ema/updates
    print(f"{a.dst}: {Path(a.dst).stat().st_size / 1e6:.2f} MB")
