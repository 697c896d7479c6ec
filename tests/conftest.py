"""Shared fixtures: small YOLO models of every family built from ultralytics YAML configs."""

import contextlib
import functools

import numpy as np
import pytest
import torch

import yolocam  # noqa: F401  (sets ultralytics offline before it is imported)
from ultralytics.nn.tasks import DetectionModel

FAMILY_CONFIGS = {
    "v5u": "yolov5nu.yaml",
    "v8": "yolov8n.yaml",
    "v9": "yolov9t.yaml",
    "v10": "yolov10n.yaml",
    "11": "yolo11n.yaml",
    "12": "yolo12n.yaml",
    "26": "yolo26n.yaml",
}


def calibrate_batchnorm(model: torch.nn.Module) -> None:
    """BatchNorm statistics of a random-weight model measured on two batches of random images (cumulative
    average), so that features are not flat; leaves the model in train mode, momentum back at 0.1."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the calibration batches
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.rand(2, 3, 128, 128))
    for bn in bns:
        bn.momentum = 0.1


def build_model(cfg: str, nc: int = 3, seed: int = 0) -> DetectionModel:
    """A random-weight detector that detects something, with scores that vary across the image.

    BatchNorm statistics are calibrated on random images (so features are not flat), and the
    class biases are spread around 0.
    """
    torch.manual_seed(seed)
    model = DetectionModel(cfg, nc=nc, verbose=False)
    calibrate_batchnorm(model)
    head = model.model[-1]
    with torch.no_grad():
        for name in ("cv3", "one2one_cv3"):
            for branch in getattr(head, name, None) or []:
                branch[-1].weight.mul_(0.2)
                branch[-1].bias.copy_(torch.randn_like(branch[-1].bias) * 1.5)  # class logits around 0
        for name in ("cv2", "one2one_cv2"):
            for branch in getattr(head, name, None) or []:
                branch[-1].bias.add_(torch.randn_like(branch[-1].bias) * 0.5)
    return model.eval()


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """One intra-op thread for the suite: the models here are tiny, and on a small shared machine
    spinning OpenMP threads make them many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


_CACHE: dict = {}


def family_model(family: str) -> DetectionModel:
    if family not in _CACHE:
        _CACHE[family] = build_model(FAMILY_CONFIGS[family])
    return _CACHE[family]


@pytest.fixture(scope="session")
def v8_model():
    return family_model("v8")


@pytest.fixture(scope="session")
def image():
    """A 150 x 200 BGR test image with a few bright shapes on noise."""
    rng = np.random.RandomState(0)
    img = (rng.rand(150, 200, 3) * 60).astype(np.uint8)
    img[30:70, 40:90] = (20, 200, 240)
    img[80:130, 120:180] = (240, 60, 30)
    return img


def build_task_model(model_class, cfg: str, nc: int, names: dict, extra_branches=(), seed: int = 0):
    """A random-weight OBB / segmentation / pose model built from `cfg` that detects something: BatchNorm
    calibrated on random images, class logits around 0, box distances of about one cell (DFL bins), and
    noise on the biases of the box branches and of the task's own `extra_branches` (angles, keypoints)."""
    torch.manual_seed(seed)
    model = model_class(cfg, nc=nc, verbose=False)
    calibrate_batchnorm(model)
    with torch.no_grad():
        head = model.model[-1]
        for name in ("cv3", "one2one_cv3"):
            for branch in getattr(head, name, None) or []:
                branch[-1].weight.mul_(0.2)
                branch[-1].bias.copy_(torch.randn_like(branch[-1].bias) * 1.5)
        for name in ("cv2", "one2one_cv2", *extra_branches):
            for branch in getattr(head, name, None) or []:
                conv = branch[-1] if isinstance(branch, torch.nn.Sequential) else branch
                if not isinstance(conv, torch.nn.Conv2d):
                    continue
                bias = conv.bias
                if name.endswith("cv2") and head.reg_max > 1:  # DFL bins: distances of about one cell, not 7.5
                    bias.copy_((-0.6 * torch.arange(head.reg_max, dtype=bias.dtype)).repeat(4))
                bias.add_(torch.randn_like(bias) * 0.5)
    model.names = dict(names)
    return model.eval()


def checkpoint_yolo_factory(folder, task: str, model_of):
    """family -> an `ultralytics.YOLO` loaded from a checkpoint of `model_of(family)` saved in `folder` (cached)."""
    from ultralytics import YOLO

    cache = {}

    def get(family):
        if family not in cache:
            path = folder / f"{family}.pt"
            torch.save({"model": model_of(family), "train_args": {"task": task}}, path)
            cache[family] = YOLO(str(path))
        return cache[family]

    return get


def assert_explaining_leaves_model_as_found(yolo, explain, predict) -> None:
    """Give `yolo`'s inner model mixed training flags, a frozen parameter, a set `.grad` and a user hook; then
    `explain()` must leave flags, requires_grad, grads, hooks, weights and `predict(yolo)` (a tensor) as found.
    The model is put back (eval, no hook, no grads) afterwards."""
    inner = yolo.model
    params = list(inner.parameters())
    inner.train()
    inner.model[3].eval()
    params[0].requires_grad_(False)
    params[5].grad = torch.full_like(params[5], 0.5)
    handle = inner.model[4].register_forward_hook(lambda *a: None)
    try:
        pred_before = predict(yolo).clone()
        flags = [m.training for m in inner.modules()]
        req = [p.requires_grad for p in params]
        hooks = [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks)) for m in inner.modules()]
        state = {k: v.clone() for k, v in inner.state_dict().items()}
        explain()
        assert [m.training for m in inner.modules()] == flags
        assert [p.requires_grad for p in params] == req
        assert all(p.grad is None for i, p in enumerate(params) if i != 5)
        assert torch.equal(params[5].grad, torch.full_like(params[5], 0.5))
        assert [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
                for m in inner.modules()] == hooks
        assert all(torch.equal(v, inner.state_dict()[k]) for k, v in state.items())
        assert torch.equal(pred_before, predict(yolo))
    finally:
        handle.remove()
        inner.eval()
        params[0].requires_grad_(True)
        params[5].grad = None


def _field(d, name):
    return d[name] if isinstance(d, dict) else getattr(d, name)


def _has(d, name) -> bool:
    return name in d if isinstance(d, dict) else hasattr(d, name)


def predicted(results, kind: str = "boxes") -> list[dict]:
    """ultralytics `Results` boxes (or `obb`) as detection dicts (box xyxy, cls, conf) for `assert_same_detections`."""
    found = getattr(results, kind)
    boxes = found.xyxy.clone()
    if kind == "obb":  # yolocam's `box` of a rotated box is its hull clipped to the image
        h, w = results.orig_shape
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
    return [{"box": b, "cls": c, "conf": p} for b, c, p in zip(boxes.tolist(), found.cls.int().tolist(),
                                                               found.conf.tolist())]


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else float(a == b)


def match_detections(got, ref, min_iou: float = 0.9) -> list[tuple[int, int]]:
    """Pairs (i, j) of the same prediction in two lists of detections (objects or manifest / report dicts with
    `box`, `cls`, `conf`): same class (and anchor, where both have one), IoU >= min_iou or corners within a
    pixel, nearest first (box
    distance in pixels plus confidence difference: end-to-end heads keep near duplicates), each used once."""
    cands = []
    for i, a in enumerate(got):
        for j, b in enumerate(ref):
            gap = max(abs(u - v) for u, v in zip(_field(a, "box"), _field(b, "box")))
            if _field(a, "cls") != _field(b, "cls") or (gap > 1.0 and _iou(_field(a, "box"), _field(b, "box")) < min_iou):
                continue  # within a pixel: random weights make boxes with x1 > x2 (no IoU)
            if _has(a, "anchor") and _has(b, "anchor") and _field(a, "anchor") != _field(b, "anchor"):
                continue
            cands.append((gap + 100 * abs(_field(a, "conf") - _field(b, "conf")), i, j))
    pairs, used_i, used_j = [], set(), set()
    for _, i, j in sorted(cands):
        if i not in used_i and j not in used_j:
            pairs.append((i, j))
            used_i.add(i)
            used_j.add(j)
    return sorted(pairs, key=lambda p: p[1])


def assert_same_detections(got, ref, *, box_px: float, conf: float, threshold: float | None = None,
                           edge: float = 1e-3, least: float = 0.9) -> list[tuple[int, int]]:
    """Detections of one image from two runs that differ only in float rounding (batched against single
    kernels, another process or thread count, a fused model): the kept sets may differ at their edge, so
    detections are matched (`match_detections`). Matched pairs have the same anchor, level and class (integers:
    exact, where both have them), boxes
    within `box_px` pixels, confidences within `conf`. A detection without a partner must sit at the edge of
    the kept set (its confidence within `edge` of `threshold` or of the other run's lowest kept one), and at
    least `least` of the detections match. Returns the pairs (index in got, index in ref)."""
    pairs = match_detections(got, ref)
    for i, j in pairs:
        a, b = got[i], ref[j]
        ints = [k for k in ("anchor", "level", "cls") if _has(a, k) and _has(b, k)]  # predict's boxes have no anchor
        assert [_field(a, k) for k in ints] == [_field(b, k) for k in ints], (i, j)
        np.testing.assert_allclose(_field(a, "box"), _field(b, "box"), rtol=0, atol=box_px)
        assert abs(_field(a, "conf") - _field(b, "conf")) <= conf, (i, j, _field(a, "conf"), _field(b, "conf"))
    for mine, other, side in ((got, ref, 0), (ref, got, 1)):
        lowest = min((_field(d, "conf") for d in other), default=0.0)
        for k in set(range(len(mine))) - {p[side] for p in pairs}:
            c = _field(mine[k], "conf")
            at_edge = abs(c - lowest) <= edge or (threshold is not None and abs(c - threshold) <= edge)
            assert at_edge, f"detection {k} (conf {c:.6f}) of run {side} has no partner and is not at the edge"
    assert len(pairs) >= least * max(len(got), len(ref)), (len(pairs), len(got), len(ref))
    return pairs


@contextlib.contextmanager
def nms_without_time_limit():
    """ultralytics' NMS stops at a wall-clock limit (2 s + 0.05 s per image of a batch) and drops the rest of the
    batch's images when it hits it, as a loaded 2-core machine can in the validator (rotated NMS of a random-weight
    OBB model: measured 0.56 s for a batch of 4 alone). Comparisons of two validations must not depend on load:
    inside this, every run gets a limit it cannot reach."""
    from unittest import mock

    from ultralytics.utils import nms

    with mock.patch.object(nms, "non_max_suppression", functools.partial(nms.non_max_suppression, max_time_img=1e6)):
        yield
