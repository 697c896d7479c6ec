"""Receptive-field windows: replaying a detection on crops gives exactly the full replay's gradients.

Exactness is checked in float64, where both replays run the same convolution code and agree to
the last bit unless a window is too small; shrinking the computed margins must break it, so the
check can fail. A windowed engine is also compared with the whole-graph reference of
`test_cross_check` at a size where windows are used.
"""

import copy

import pytest
import torch
from torch import nn

import yolocam
from yolocam.cli.bench import bench_image
from yolocam.model.detections import Detection
from yolocam.cam.engine import CamEngine
from yolocam.model.layers import resolve_layers
from yolocam.cam.methods import get_method
from yolocam.model.targets import get_target
from yolocam.cam.windows import module_reach, window

from conftest import family_model
from test_cross_check import reference_maps

IMGSZ = 320


def _raw_maps(model, method, target, windows, margins_shift=0.0):
    """The method's raw layer maps per chunk, the result and the window plan, for a loop-strategy engine."""
    exp = yolocam.Explainer(model, imgsz=IMGSZ, method=method, target=target, strategy="loop", layers="neck", fuse="sum")
    eng = exp.engine
    eng.windows = windows
    captured = []  # per chunk, per layer (jobs, h, w), jobs in order
    chunk_maps = eng._chunk_layer_maps
    eng._chunk_layer_maps = lambda *args: captured.append(chunk_maps(*args)) or captured[-1]
    if margins_shift:
        plan_of = eng._window_plan

        def shifted(*args):
            plan = plan_of(*args)
            if plan is not None and plan.usable:
                margins = [None if m is None else max(0.0, m + margins_shift) for m in plan.levels.margins]
                object.__setattr__(plan.levels, "margins", margins)
            return plan

        eng._window_plan = shifted
    result = exp.explain(bench_image(IMGSZ), conf=0.0, iou=0.5, max_det=10)[0]
    plan = next(iter(eng._plans.values()), None)
    return _one_chunk(captured), result, plan


def _one_chunk(chunks):
    """Per-chunk lists of per-layer (jobs, h, w) maps -> one list (a single chunk of all jobs)."""
    return [[torch.cat([c[k] for c in chunks]) for k in range(len(chunks[0]))]]


def _max_difference(a, b) -> float:
    return max(float((x - y).abs().max()) for ma, mb in zip(a, b) for x, y in zip(ma, mb))


@pytest.mark.parametrize("family", ["v8", "11", "26", "v10", "v9"])
@pytest.mark.parametrize("method,target", [("hirescam", "class"), ("gradcam++", "box")])
def test_windowed_replay_is_exact(family, method, target):
    model = copy.deepcopy(family_model(family)).double()
    windowed, result, plan = _raw_maps(model, method, target, windows=True)
    full, _, _ = _raw_maps(model, method, target, windows=False)
    n_windowed = sum(plan.window_of(d.level, d.anchor) is not None for d in result.detections)
    assert n_windowed >= 3, f"{family}: only {n_windowed} of {len(result.detections)} detections windowed"
    assert len(windowed) == len(full) == 1
    assert len(windowed[0][0]) == len(result.detections) * get_target(target).n_components
    assert _max_difference(windowed, full) <= 1e-12 * max(float(m.abs().max()) for ms in full for m in ms)


def test_smaller_margins_break_exactness():
    model = copy.deepcopy(family_model("v8")).double()
    full, _, _ = _raw_maps(model, "hirescam", "class", windows=False)
    exact, _, _ = _raw_maps(model, "hirescam", "class", windows=True)
    short, _, plan = _raw_maps(model, "hirescam", "class", windows=True, margins_shift=-40.0)
    scale = max(float(m.abs().max()) for ms in full for m in ms)
    assert _max_difference(exact, full) <= 1e-12 * scale
    assert _max_difference(short, full) > 1e-6 * scale


def test_windowed_engine_matches_whole_graph_reference():
    model = family_model("v8")
    exp = yolocam.Explainer(model, imgsz=IMGSZ, layers="neck", fuse="sum")
    image = bench_image(IMGSZ)
    x, _ = exp.adapter.preprocess([image], IMGSZ)
    layers = [12, 15, 18, 21]
    engine = CamEngine(exp.adapter, get_method("hirescam"), get_target("class"), resolve_layers(exp.adapter, layers),
                       strategy="loop")
    result = engine.run(x, conf=0.0, iou=0.5, max_det=6)
    dets = result.detections[0]
    plan = next(iter(engine._plans.values()))
    assert sum(plan.window_of(d.level, d.anchor) is not None for d in dets) >= 3
    ref = reference_maps(model, x, layers, [(d.anchor, d.cls) for d in dets], "hirescam", exp.adapter.end2end)
    torch.testing.assert_close(result.heatmaps[0], ref, atol=2e-3, rtol=1e-3)


def test_module_reach_by_hand():
    from ultralytics.nn.modules import C2f, SPPF, Conv

    assert module_reach(Conv(4, 4, 3)) == 1  # one 3x3 convolution reads one cell beyond its own
    assert module_reach(Conv(4, 4, 1)) == 0
    assert module_reach(nn.Conv2d(4, 4, 3, padding=2, dilation=2)) == 2
    assert module_reach(nn.Conv2d(4, 4, 3, padding=0)) == 2  # unpadded: reads two cells on one side
    assert module_reach(C2f(8, 8, n=2)) == 4  # two bottlenecks of two 3x3 convolutions each
    assert module_reach(SPPF(8, 8)) is None  # reuses its pooling layer: not known to be local


def test_levels_without_a_known_receptive_field_are_replayed_whole():
    # yolo12's neck has area attention on every level; yolo26's P5 block has attention, P3 and P4 do not
    for family, known in (("12", [False, False, False]), ("26", [True, True, False])):
        exp = yolocam.Explainer(family_model(family), imgsz=IMGSZ, strategy="loop", layers="neck", fuse="sum")
        exp.explain(bench_image(IMGSZ), conf=0.0, max_det=2)
        margins = next(iter(exp.engine._plans.values())).levels.margins
        assert [m is not None for m in margins] == known, f"{family}: {margins}"


def test_window_geometry():
    # a stride-8 cell at (2, 30): 48 px margins, aligned to 32 px, clipped to a 320 x 320 input
    assert window(2, 30, 8.0, 48.0, 32, (320, 320)) == (0, 96, 192, 320)
    assert window(20, 20, 8.0, 48.0, 32, (320, 320)) == (96, 224, 96, 224)


@pytest.mark.parametrize("family,target", [("v8", "box"), ("26", "class"), ("v10", "all")])
def test_head_crops_are_exact_at_borders_and_inside(family, target):
    """Targets read from head crops equal those from the whole head, for anchors in corners, on edges
    and inside every level (float64, bit for bit up to 1e-12 of the largest map value)."""
    model = copy.deepcopy(family_model(family)).double()
    exp = yolocam.Explainer(model, imgsz=IMGSZ, target=target, strategy="loop", layers="neck", fuse="sum")
    x, _ = exp.adapter.preprocess([bench_image(IMGSZ)], IMGSZ)

    def select(head):
        dets, offset = [], 0
        for lvl, stride in enumerate(exp.adapter.strides):
            h = w = int(IMGSZ // stride)
            for gy, gx in ((0, 0), (0, w // 2), (h - 1, w - 1), (h // 2, 1), (h // 2, w // 2)):
                a = offset + gy * w + gx
                dets.append(Detection(0, a, lvl, 0, 0.5, head.boxes[0, a].tolist()))
            offset += h * w
        return [dets]

    maps = {}
    for crops in (True, False):
        eng = CamEngine(exp.adapter, get_method("hirescam"), get_target(target), exp.layers, strategy="loop",
                        windows=False)
        if not crops:
            eng.head_reach = [None] * len(eng.head_reach)
        captured = []
        chunk_maps = eng._chunk_layer_maps
        eng._chunk_layer_maps = lambda *args: captured.append(chunk_maps(*args)) or captured[-1]
        eng.run(x, select=select)
        maps[crops] = _one_chunk(captured)
    scale = max(float(m.abs().max()) for ms in maps[False] for m in ms)
    assert len(maps[True][0][0]) == 15 * get_target(target).n_components
    assert _max_difference(maps[True], maps[False]) <= 1e-12 * scale
