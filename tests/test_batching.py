"""Batched explanations equal one-by-one ones, whatever the chunking.

The reference here is independent of the engine: for each detection alone, a fresh full forward
of the ultralytics model with autograd (its own `forward`, pre-sigmoid logits from its raw
output), forward hooks on the target layers, `torch.autograd.grad` of that detection's target at
its anchor, then the CAM formula written out below and the `sum` fusion.
"""

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import yolocam
from yolocam.cam.fusion import to_original

IMGSZ = 128
MAX_DET = 4
IOU = 0.1  # spreads the 4 boxes over all three levels of this model
TOL = 1e-5  # maps are in [0, 1], handed out as float32; the models here are float64. In float32 the
# Grad-CAM++ weights of box targets amplify rounding: this model's float32 maps differ from its float64 ones by
# up to 3e-3, and two float32 computations with different kernels (batch norm folded or not) by up to 7e-3.
METHODS = ("gradcam", "gradcam++", "hirescam", "ssgradcam++")
TARGETS = ("class", "box")


# ------------------------------------------------------------ reference CAM formulas, (C, H, W) -> (H, W)
def _gradcam(a, g):
    return (g.mean((1, 2), keepdim=True) * a).sum(0)


def _gradcampp_weights(a, g):
    g2, g3 = g * g, g * g * g
    denom = 2 * g2 + g3 * a.sum((1, 2), keepdim=True)
    alpha = torch.where(denom != 0, g2 / torch.where(denom != 0, denom, torch.ones_like(denom)), torch.zeros_like(g))
    return (alpha * g.clamp(min=0)).sum((1, 2), keepdim=True)


def _gradcampp(a, g):
    return (_gradcampp_weights(a, g) * a).sum(0)


def _hirescam(a, g):
    return (g * a).sum(0)


def _ssgradcampp(a, g):
    peak = g.abs().amax((1, 2), keepdim=True)
    sens = torch.where(peak > 0, g.abs() / torch.where(peak > 0, peak, torch.ones_like(peak)), torch.zeros_like(g))
    return (_gradcampp_weights(a, g) * sens * a).sum(0)


FORMULAS = {"gradcam": _gradcam, "gradcam++": _gradcampp, "hirescam": _hirescam, "ssgradcam++": _ssgradcampp}


def _normalise(m):
    m = m.clamp(min=0)
    peak = m.max()
    return m / peak if peak > 0 else torch.zeros_like(m)


def _fuse_sum(maps, size):
    """Rectify each layer's (h, w) map, upsample to `size`, sum, scale to [0, 1]."""
    total = sum(F.interpolate(m.clamp(min=0)[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
                for m in maps)
    return _normalise(total)


# ------------------------------------------------------------------------ one-by-one reference
def _reference_gradients(model, x, layer_ids, det, target):
    """Per target component: [(act (C,h,w), grad (C,h,w)) per layer] for one detection, from a fresh forward."""
    store = {}
    handles = [model.model[i].register_forward_hook(lambda m, inp, out, i=i: store.__setitem__(i, out))
               for i in layer_ids]
    try:
        with torch.enable_grad():
            y, raw = model(x.clone().requires_grad_(True))  # eval: (decoded (B, 4+nc, A), raw dict)
            acts = [store[i] for i in layer_ids]
            if target == "class":
                values = [raw["scores"][0, det.cls, det.anchor]]  # pre-sigmoid logit
            else:
                cx, cy, w, h = y[0, :4, det.anchor]  # decoded xywh, input pixels
                stride = float(model.stride[det.level])
                values = [v / stride for v in (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)]
            out = []
            for v in values:
                grads = torch.autograd.grad(v, acts, retain_graph=True)
                out.append([(a[0].detach(), g[0]) for a, g in zip(acts, grads)])
    finally:
        for h in handles:
            h.remove()
    return out


def _reference_map(per_component, method, size, lb):
    """The fused, normalised map of one detection in original-image space (H0, W0)."""
    fn = FORMULAS[method]
    maps = [_fuse_sum([fn(a, g) for a, g in layers], size) for layers in per_component]
    return to_original(torch.stack(maps).amax(0)[None], lb)[0].numpy()


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def model64(v8_model):
    return copy.deepcopy(v8_model).double().eval()


@pytest.fixture(scope="module")
def setup(model64, image):
    """Detections and reference gradients per target (they do not depend on the method)."""
    exp = yolocam.Explainer(model64, method="gradcam", imgsz=IMGSZ, layers="neck", fuse="sum")
    layer_ids = [t.top for t in exp.layers]
    assert layer_ids == [12, 15, 18, 21]  # yolov8n's neck outputs
    dets = exp.explain(image, conf=0.0, iou=IOU, max_det=MAX_DET)[0].detections
    assert len(dets) == MAX_DET
    assert len({d.level for d in dets}) >= 2  # one replay batch mixes levels
    x, lbs = exp.adapter.preprocess([image], IMGSZ)
    refs = {}
    for target in TARGETS:
        refs[target] = [_reference_gradients(model64, x, layer_ids, d, target) for d in dets]
    return {"dets": dets, "refs": refs, "size": tuple(x.shape[-2:]), "lb": lbs[0]}


def _explain(model, image, method, target, max_det=MAX_DET, conf=0.0, **kw):
    exp = yolocam.Explainer(model, method=method, target=target, imgsz=IMGSZ, **{"layers": "neck", "fuse": "sum", **kw})
    return exp.explain(image, conf=conf, iou=IOU, max_det=max_det)[0]


def _assert_untouched(model):
    assert all(p.grad is None for p in model.parameters())


# ------------------------------------------------------------------------------------ tests
def _assert_matches(result, setup, method, target, what):
    refs = [_reference_map(r, method, setup["size"], setup["lb"]) for r in setup["refs"][target]]
    assert [(d.anchor, d.cls) for d in result.detections] == [(d.anchor, d.cls) for d in setup["dets"]]
    for k, (det, ref) in enumerate(zip(result.detections, refs)):
        assert det.heatmap.shape == ref.shape and ref.max() > 0
        err = float(np.abs(det.heatmap - ref).max())
        assert err < TOL, f"{method}/{target} {what} detection {k}: max |batched - one-by-one| = {err:.2e}"


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("method", METHODS)
def test_batched_equals_one_by_one(model64, image, setup, method, target):
    """Every box (and box component) in one replay agrees with explaining each box alone."""
    result = _explain(model64, image, method, target, max_batch=1000)
    _assert_matches(result, setup, method, target, "one replay")
    _assert_untouched(model64)


@pytest.mark.parametrize("target", TARGETS)
def test_chunked_equals_one_by_one(model64, image, setup, target, monkeypatch):
    """max_batch=2 and a tiny memory_mb split the jobs into several chunks and still give the same maps."""
    real, calls = torch.autograd.grad, []

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", counting)
    jobs = MAX_DET * (4 if target == "box" else 1)
    for kw, least in (({"max_batch": 2}, math.ceil(jobs / 2)), ({"memory_mb": 1e-3}, jobs)):
        calls.clear()
        result = _explain(model64, image, "ssgradcam++", target, **kw)
        assert len(calls) >= least, f"{kw}: {len(calls)} autograd calls for {jobs} jobs: not chunked"
        _assert_matches(result, setup, "ssgradcam++", target, str(kw))
    _assert_untouched(model64)


@pytest.mark.parametrize("method", ("gradcam++", "ssgradcam++"))
def test_single_box(model64, image, setup, method):
    result = _explain(model64, image, method, "class", max_det=1, max_batch=2)
    assert len(result.detections) == 1
    det = result.detections[0]
    assert (det.anchor, det.cls) == (setup["dets"][0].anchor, setup["dets"][0].cls)
    ref = _reference_map(setup["refs"]["class"][0], method, setup["size"], setup["lb"])
    assert float(np.abs(det.heatmap - ref).max()) < TOL


@pytest.mark.parametrize("kw", ({"max_batch": 2}, {"memory_mb": 1e-3}, {}))
def test_no_boxes(v8_model, image, kw):
    result = _explain(v8_model, image, "ssgradcam++", "box", conf=1.0, **kw)
    assert result.detections == []
    _assert_untouched(v8_model)


def test_model_state_restored(v8_model, image):
    """Parameter .grad stays None; requires_grad flags and every module's training flag come back."""
    model = v8_model
    layers = list(model.model)
    try:
        model.train()
        layers[3].eval()  # a mixed state must come back exactly
        for i, p in enumerate(model.parameters()):
            p.requires_grad_(i % 3 != 0)
        modes = [m.training for m in model.modules()]
        flags = [p.requires_grad for p in model.parameters()]
        result = _explain(model, image, "ssgradcam++", "all", max_det=3, max_batch=4)
        assert len(result.detections) == 3
        assert all(np.isfinite(d.heatmap).all() for d in result.detections)
        assert [m.training for m in model.modules()] == modes
        assert [p.requires_grad for p in model.parameters()] == flags
        _assert_untouched(model)
    finally:
        for p in model.parameters():
            p.requires_grad_(True)
            p.grad = None
        model.eval()


def test_memory_bound_sets_the_chunk_size(model64, image, setup, monkeypatch):
    """The per-job cost is measured on a one-row replay (at least its layer outputs); a bound of 2.5
    jobs gives chunks of 2 in the batched strategy, and the same maps."""
    from yolocam.model.hooks import LayerHooks
    from yolocam.model.layers import flatten_output

    exp = yolocam.Explainer(model64, method="hirescam", imgsz=IMGSZ, strategy="batched", layers="neck", fuse="sum")
    eng = exp.engine
    x, _ = exp.adapter.preprocess([image], IMGSZ)
    with exp.adapter.explaining(), LayerHooks(eng.layers) as hooks, torch.inference_mode(False):
        with torch.no_grad():
            outputs = exp.adapter.run_layers(x, [None] * len(exp.adapter.layers))
        per_job = eng.bytes_per_job(hooks, outputs)
    activations = sum(t[0].numel() * t.element_size() for out in outputs[eng.start:] if out is not None
                      for t in flatten_output(out))
    assert activations < per_job < 10 * activations
    eng.memory_mb = 2.5 * per_job / 2**20
    real, calls = torch.autograd.grad, []
    monkeypatch.setattr(torch.autograd, "grad", lambda *a, **k: calls.append(1) or real(*a, **k))
    result = exp.explain(image, conf=0.0, iou=IOU, max_det=MAX_DET)[0]
    levels = {d.level for d in result.detections}
    assert len(calls) >= math.ceil(MAX_DET / 2) and len(calls) <= math.ceil(MAX_DET / 2) + len(levels)
    _assert_matches(result, setup, "hirescam", "class", "memory bound")
