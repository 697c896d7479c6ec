"""Start the demo classifier from the demo detector's backbone (the two networks share layers 0-8).

Usage: python weights_scripts/init_cls.py yolocam/demo/weights/demo-v8.pt /tmp/demo-cls-init.pt

From scratch the narrow classifier did not learn the crops (loss stayed at ln 4 for three epochs,
with and without warm-up, RandAugment and erasing); with the detector's backbone it reaches 95 %
training accuracy within 150 batches. The head (a 1x1 conv to 1280 channels and the linear layer)
starts from random weights.
"""

import argparse
from pathlib import Path

import _offline  # noqa: F401  (must precede ultralytics imports)
import torch
from ultralytics.nn.tasks import ClassificationModel, load_checkpoint

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("detector")
    ap.add_argument("out")
    ap.add_argument("--yaml", default=str(Path(__file__).with_name("demo-cls.yaml")))
    a = ap.parse_args()
    det, _ = load_checkpoint(a.detector)
    torch.manual_seed(0)
    model = ClassificationModel(a.yaml, nc=4, verbose=False)
    head_index = len(model.model) - 1
    shared = {k: v.float() for k, v in det.state_dict().items() if int(k.split(".")[1]) < head_index}
    missing, unexpected = model.load_state_dict(shared, strict=False)
    assert not unexpected and all(int(k.split(".")[1]) == head_index for k in missing), (missing, unexpected)
    torch.save({"model": model, "train_args": {"task": "classify"}}, a.out)
    print(f"{a.out}: {len(shared)} tensors from {a.detector}, head random")
