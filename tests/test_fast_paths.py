"""The default's fast paths against the exact computation: the gate fused at the finest layer's grid
(`exact=False`, the default, here without its truncated windows: tests/test_truncated_windows.py) against the
input-resolution product (`exact=True`), and the low-pass of `smooth` against a hand-built separable Gaussian."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import yolocam
from yolocam.cam.fusion import check_smooth, smooth_maps
from yolocam.demo.scenes import make_scene, scene_seed
from yolocam.errors import YolocamError


@pytest.fixture(scope="module")
def scenes():
    return [make_scene(scene_seed(2025, "test", i)) for i in range(3)]


@pytest.mark.parametrize("method", ["aalayercam", "ssgradcam++"])
def test_gate_at_the_fine_grid_equals_the_exact_gate(scenes, method):
    """Measured on these scenes at imgsz 320 (18 boxes): correlation median 0.99989, worst 0.99967 for
    aalayercam (its low-pass makes the products smooth); median 0.9981, worst 0.9914 for ssgradcam++.
    Thresholds 0.99 median, 0.97 worst (the speed issue's goal)."""
    fast = yolocam.Explainer("demo-v8", method=method, imgsz=320, windows=False)  # the gate alone: no truncated windows
    exact = yolocam.Explainer("demo-v8", method=method, imgsz=320, exact=True)
    assert not fast.engine.exact and exact.engine.exact
    rs = []
    for s in scenes:
        a, b = fast.explain(s.image)[0], exact.explain(s.image)[0]
        assert [d.anchor for d in a.detections] == [d.anchor for d in b.detections] and a.detections
        for da, db in zip(a.detections, b.detections):
            ha, hb = da.heatmap, db.heatmap
            assert ha.max() == pytest.approx(1.0) and hb.max() == pytest.approx(1.0)
            rs.append(float(np.corrcoef(ha.ravel(), hb.ravel())[0, 1]))
    assert len(rs) >= 5
    assert float(np.median(rs)) >= 0.99 and min(rs) >= 0.97, rs


def test_exact_gate_is_the_product_at_input_resolution():
    """exact=True is `fuse_layer_maps(..., "gate")` at the input size: checked on the engine's own layer maps."""
    from yolocam.cam.projection import ProjectorCache, assemble_maps
    from yolocam.cam.fusion import fuse_layer_maps
    from yolocam.model.detections import Detection

    torch.manual_seed(0)
    maps = [torch.rand(2, 16, 16), torch.rand(2, 8, 8), torch.rand(2, 4, 4)]
    dets = [[Detection(0, 0, 0, 0, 0.9, (0.0, 0.0, 4.0, 4.0)), Detection(0, 1, 0, 0, 0.8, (0.0, 0.0, 4.0, 4.0))]]
    size = (64, 64)
    exact = assemble_maps(maps, dets, 1, "gate", size, None, [4, 8, 16], ProjectorCache(), "cpu", exact=True)[0]
    by_hand = fuse_layer_maps(maps, "gate", size, [4, 8, 16], None)
    torch.testing.assert_close(exact, by_hand)
    fast = assemble_maps(maps, dets, 1, "gate", size, None, [4, 8, 16], ProjectorCache(), "cpu")[0]
    assert fast.shape == exact.shape and float(fast.amax()) == pytest.approx(1.0)
    r = np.corrcoef(fast.numpy().ravel(), exact.numpy().ravel())[0, 1]
    assert r >= 0.95  # random maps, the worst case for the order of product and resize (measured 0.994)


def test_smooth_is_a_separable_gaussian_by_hand():
    m = torch.zeros(1, 9, 9)
    m[0, 4, 4] = 1.0
    out = smooth_maps(m, 1.0)
    r = 3
    g = torch.tensor([math.exp(-0.5 * x * x) for x in range(-r, r + 1)])
    g = g / g.sum()
    expected = torch.zeros(9, 9)
    expected[1:8, 1:8] = g[:, None] * g[None, :]  # the impulse spread by the 7x7 kernel, fully inside
    torch.testing.assert_close(out[0], expected, atol=1e-6, rtol=1e-5)
    assert smooth_maps(m, 0.0) is m
    flat = torch.full((1, 3, 5), 2.0)
    torch.testing.assert_close(smooth_maps(flat, 2.0), flat)  # edges replicated: a constant stays constant


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), "x", 100])
def test_smooth_rejects_bad_values_in_one_line(bad):
    with pytest.raises(YolocamError, match="smooth: expected"):
        check_smooth(bad)


def test_the_default_method_smooths_by_one_cell_and_smooth_overrides_it():
    assert yolocam.Explainer("demo-v8").engine.smooth == 1.0
    assert yolocam.Explainer("demo-v8", method="layercam").engine.smooth == 0.0
    assert yolocam.Explainer("demo-v8", smooth=0).engine.smooth == 0.0
    assert yolocam.Explainer("demo-v8", method="hirescam", smooth=2).engine.smooth == 2.0
