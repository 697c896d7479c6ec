"""Classification models (head `Classify`: yolov8n-cls, yolo11n-cls, ...): an image-level explanation per class.

A classification model makes one prediction per image, so it is explained as a model with one "anchor":
- `HeadOutputs.logits` (B, 1, nc) are the `Classify` head's pre-softmax logits, computed here from the
  head's own modules (conv, pool, drop, linear) so that they have gradients (in eval mode the head
  itself returns `(softmax, logits)`); `boxes` (B, 1, 4) is the whole model input; anchor 0, level 0;
- the detections are the top-k classes by softmax probability, highest first (k = `max_det`, only those
  with a probability of at least `conf`), as ultralytics' `Probs.top5` / `top5conf` order them; each
  gets its own map, and its box is the whole original image: the map explains the class, not a region;
- the input is made as ultralytics' classify predictor makes it (`classify_transforms`): the short side
  resized to `imgsz`, then a centre crop of `imgsz` x `imgsz` (`inputs/images.py`, `centre_crop_params`);
  the maps cover that crop in the original image and are zero outside it;
- the `class` target (the logit) and `conf` (the softmax probability) read this one prediction; targets
  of boxes, masks or keypoints do not exist here (`targets.for_task` refuses them).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

CLASSIFY_HEADS = ("Classify",)
TOP_K = 5  # default number of classes explained per image, as ultralytics' `Probs.top5`


def is_classify(head: nn.Module) -> bool:
    """Whether `head` is a classification head."""
    return type(head).__name__ in CLASSIFY_HEADS


def model_class(cfg: str | Path):
    """The ultralytics model class a model YAML builds: `ClassificationModel` for a `Classify` head (as
    ultralytics' `guess_model_task` reads the YAML), else `DetectionModel` (which builds every other head)."""
    from ultralytics.nn.tasks import ClassificationModel, DetectionModel, guess_model_task, yaml_model_load

    try:
        task = guess_model_task(yaml_model_load(str(cfg)))
    except (KeyError, IndexError, TypeError, AttributeError):
        task = None  # a malformed YAML: the model class reports it
    return ClassificationModel if task == "classify" else DetectionModel


def num_classes(head: nn.Module) -> int:
    return int(head.linear.out_features)


def head_outputs(head: nn.Module, feat, stride: float):
    """The Classify head on its input -> logits (B, 1, nc), boxes (B, 1, 4) = the whole input (pixels),
    strides (1,), anchors (1, 2) (the grid centre), levels (1,)."""
    x = torch.cat(feat, 1) if isinstance(feat, (list, tuple)) else feat
    logits = head.linear(head.drop(head.pool(head.conv(x)).flatten(1)))[:, None]
    h, w = x.shape[-2:]
    box = x.new_tensor([0.0, 0.0, w * stride, h * stride])
    boxes = box.expand(x.shape[0], 1, 4)
    anchors = x.new_tensor([[w / 2, h / 2]])
    return logits, boxes, x.new_tensor([stride]), anchors, torch.zeros(1, dtype=torch.long, device=x.device)


def top_classes(logits: torch.Tensor, conf: float, classes, max_det: int) -> list[tuple[list[int], list[float]]]:
    """Per image the explained classes and their softmax probabilities, highest first: the top `max_det`
    (among `classes` when given) with a probability of at least `conf`. logits: (B, 1, nc)."""
    probs = logits.detach().float()[:, 0].softmax(-1)
    out = []
    for p in probs:
        order = p.argsort(descending=True)
        if classes is not None:
            keep = torch.as_tensor(list(classes), device=p.device)
            order = order[(order[:, None] == keep).any(1)]
        order = order[p[order] >= conf][:max_det]
        out.append((order.tolist(), p[order].tolist()))
    return out


def instance_fields(dets, lb, masks=None) -> dict[str, list]:
    """Classification's instance data in original-image pixels (`detections.instance_data_to_original`):
    each detection is an image-level explanation of a class, so its box is the whole original image."""
    h0, w0 = lb.orig_shape
    return {"box": [[0.0, 0.0, float(w0), float(h0)]] * len(dets)}


def layer_groups(strides: list[int], head_inputs: list[int]) -> dict[str, list[int]]:
    """Named layer sets of a classification backbone (`strides`: output stride of each layer before the head).

    `backbone`: the last layer of each stage of stride 8 and more (the P3/P4/P5-like stage outputs);
    `fine`: the last stride-4 layer (else the finest below stride 8); `head`: the head's input layer;
    `neck`: there is none, so the layer that plays its part, the last stage feeding the head (= `head`).
    """
    last: dict[int, int] = {}
    for i, s in enumerate(strides):
        if i > 0 and s > 1:
            last[s] = i
    backbone = sorted(i for s, i in last.items() if s >= 8) or list(head_inputs)
    below = [s for s in last if s < 8]
    fine = [last[4]] if 4 in last else ([last[max(below)]] if below else backbone[:1])
    return {"fine": fine, "backbone": backbone, "neck": list(head_inputs), "head": list(head_inputs)}
