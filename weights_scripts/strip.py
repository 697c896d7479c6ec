"""Strip a training checkpoint to an fp16 model-only file and place it in yolocam/demo/weights/.

Usage: python weights_scripts/strip.py /tmp/yolocam_runs/demo-v8/weights/last.pt yolocam/demo/weights/demo-v8.pt
       [--class-order circle,square,triangle,cross]

`--class-order` (classifiers): ultralytics numbers a classification set's classes in the sorted order of
its folder names; this reorders the Classify head's output rows and the names to the given order, so
the demo classifier numbers its classes as the demo detectors do. Its predictions are otherwise unchanged.
"""

import argparse
from pathlib import Path

import _offline  # noqa: F401  (must precede ultralytics imports)
import torch
from ultralytics.utils.torch_utils import strip_optimizer


def reorder_classes(path: str, order: list[str]) -> None:
    """Permute a Classify head's linear layer and the model's names to `order` (names), in place on disk."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    model = ckpt["model"]
    names = model.names if isinstance(model.names, dict) else dict(enumerate(model.names))
    old = {n: i for i, n in names.items()}
    assert sorted(old) == sorted(order), (names, order)
    perm = torch.tensor([old[n] for n in order])
    linear = model.model[-1].linear
    with torch.no_grad():
        linear.weight.copy_(linear.weight[perm].clone())
        linear.bias.copy_(linear.bias[perm].clone())
    model.names = dict(enumerate(order))
    torch.save(ckpt, path)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--class-order", default=None, help="comma-separated class names (classifiers)")
    a = ap.parse_args()
    Path(a.dst).parent.mkdir(parents=True, exist_ok=True)
    strip_optimizer(a.src, a.dst)  # EMA weights -> model, fp16, drops optimizer/ema/updates
    if a.class_order:
        reorder_classes(a.dst, a.class_order.split(","))
    print(f"{a.dst}: {Path(a.dst).stat().st_size / 1e6:.2f} MB")
