"""Batch norm folded into its convolution during an explanation (`model/folding.py`): the same outputs and
maps, the model untouched after, hooks and other threads respected, weights refolded when they change."""

import copy
import threading

import numpy as np
import torch

import yolocam
from yolocam.cli.bench import bench_image
from yolocam.model.folding import BatchNormFolding

from conftest import family_model

IMGSZ = 128


def _model(dtype=torch.float64):
    return copy.deepcopy(family_model("v8")).to(dtype).eval()


def _conv_class():
    from ultralytics.nn.modules.conv import Conv

    return Conv


def test_folded_forward_equals_the_model_and_leaves_it_as_found():
    model = _model()
    x = torch.rand((1, 3, IMGSZ, IMGSZ), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        want = model(x)[0]
        folding = BatchNormFolding()
        with folding.applied(model) as n:
            got = model(x)[0]
            convs = sum(isinstance(m, _conv_class()) for m in model.modules())
            assert n == convs > 20  # every Conv of the model folded
            assert all("forward" in m.__dict__ for m in model.modules() if isinstance(m, _conv_class()))
    assert float((got - want).abs().max()) <= 1e-9 * float(want.abs().max())
    assert not any("forward" in m.__dict__ for m in model.modules())
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    with torch.no_grad():
        assert torch.equal(model(x)[0], want)


def test_hooked_batch_norms_and_kept_modules_stay_unfolded():
    model = _model()
    convs = [m for m in model.modules() if isinstance(m, _conv_class())]
    seen = []
    handle = convs[3].bn.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    try:
        x = torch.rand((1, 3, IMGSZ, IMGSZ), dtype=torch.float64)
        with torch.no_grad(), BatchNormFolding().applied(model, keep=[convs[5].conv]) as n:
            model(x)
            assert "forward" not in convs[3].__dict__ and "forward" not in convs[5].__dict__
        assert n == len(convs) - 2
        assert len(seen) == 1  # the user's hook saw its batch norm run
    finally:
        handle.remove()


def test_other_threads_run_the_modules_own_forward():
    model = _model()
    conv = next(m for m in model.modules() if isinstance(m, _conv_class()))
    x = torch.rand((1, conv.conv.in_channels, 16, 16), dtype=torch.float64)
    with torch.no_grad():
        own = conv.act(conv.bn(conv.conv(x)))
        with BatchNormFolding().applied(model):
            out = {}
            t = threading.Thread(target=lambda: out.setdefault("y", conv(x)))
            t.start()
            t.join()
            mine = conv(x)  # this thread: folded, equal up to rounding
    assert torch.equal(out["y"], own)  # exactly the unfolded computation
    assert float((mine - own).abs().max()) <= 1e-9 * float(own.abs().max())


def test_changed_weights_are_refolded():
    model = _model()
    folding = BatchNormFolding()
    x = torch.rand((1, 3, IMGSZ, IMGSZ), dtype=torch.float64)
    with torch.no_grad():
        with folding.applied(model):
            model(x)
        for m in model.modules():  # an optimiser-like in-place step on every batch norm
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.add_(0.1)
                m.weight.mul_(1.5)
        want = model(x)[0]
        with folding.applied(model):
            got = model(x)[0]
    assert float((got - want).abs().max()) <= 1e-9 * float(want.abs().max())


def test_maps_equal_the_unfolded_engine(monkeypatch):
    """float32, channels_last folded weights: every box's map equals the unfolded engine's up to rounding."""
    import contextlib

    image = bench_image(IMGSZ * 2, kind="scene")
    model = _model(torch.float32)
    got = yolocam.Explainer(model, imgsz=IMGSZ).explain(image, conf=0.0, max_det=8)[0]
    plain = yolocam.Explainer(model, imgsz=IMGSZ)
    monkeypatch.setattr(plain.engine.folding, "applied", lambda *a, **k: contextlib.nullcontext(0))
    want = plain.explain(image, conf=0.0, max_det=8)[0]
    assert len(got.detections) == len(want.detections) == 8
    for a, b in zip(got.detections, want.detections):
        assert np.allclose(a.box, b.box, atol=1e-3)
        assert float(np.abs(a.heatmap - b.heatmap).max()) < 2e-3
