"""The engines behind one interface (settings, `from_settings`, `run`, `steps`), picked by a registry, and
each task's instance data mapped back to the original image by its own module."""

from __future__ import annotations

import inspect
import math
from dataclasses import fields

import numpy as np
import pytest
import torch

import yolocam
from yolocam.cam.drise import DriseEngine, DriseSettings
from yolocam.cam.engine import CamEngine, CamSettings
from yolocam.cam.engines import ENGINES, build_engine, engine_class, engine_settings
from yolocam.cam.methods import get_method
from yolocam.demo.scenes import make_scene
from yolocam.errors import YolocamError
from yolocam.inputs.images import Letterbox, letterbox_params
from yolocam.model.detections import Detection, InstanceData, instance_data_to_original
from yolocam.model.targets import get_target

IMGSZ = 160
TOL = 1e-4  # float rounding only (the compact maps' contract is 1/255)

# original 100 x 200 (H x W) shown 100 x 40 in a 100 x 64 input, 12 px of padding on top: gains 0.5 (x), 0.4 (y)
LB = Letterbox(orig_shape=(100, 200), shape=(64, 100), new_unpad=(100, 40), top=12, left=0)


def det(box=(10.0, 12.0, 60.0, 32.0), rbox=None, keypoints=None, k=0):
    return Detection(0, k, 0, 0, 0.9, box, rbox, keypoints)


def test_both_engines_have_one_interface():
    assert set(ENGINES.values()) == {CamEngine, DriseEngine}
    run, build = inspect.signature(CamEngine.run), inspect.signature(CamEngine.from_settings)
    for engine in ENGINES.values():
        assert inspect.signature(engine.run) == run
        assert list(inspect.signature(engine.from_settings).parameters) == list(build.parameters)
        assert engine.Settings.__dataclass_params__.frozen
    assert engine_class(get_method("drise")) is DriseEngine and engine_class(get_method("hirescam")) is CamEngine
    # no keyword belongs to both engines: each flat Explainer keyword goes to exactly one
    assert not {f.name for f in fields(CamSettings)} & {f.name for f in fields(DriseSettings)}


def test_flat_keywords_become_the_chosen_engines_settings():
    cls, drise = get_target("class"), get_method("drise")
    kw = dict(layers="neck", fuse="sum", memory_mb=64.0, masks=12, keep=0.25, progress=None)
    assert engine_settings(get_method("hirescam"), cls, **kw) == CamSettings(layers="neck", fuse="sum", memory_mb=64.0)
    assert engine_settings(drise, cls, **kw) == DriseSettings(masks=12, keep=0.25, progress=None)
    with pytest.raises(TypeError, match="unknown engine settings: mask"):
        engine_settings(drise, cls, mask=3)
    with pytest.raises(YolocamError, match="signed=True needs an element-wise method"):
        engine_settings(drise, cls, signed=True)  # D-RISE keeps no sign: refused, not ignored
    with pytest.raises(YolocamError, match="drise keep"):
        engine_settings(drise, cls, keep=1.5)
    engine_settings(get_method("gradcam"), cls, keep=1.5)  # a D-RISE value is not a gradient method's concern
    with pytest.raises(YolocamError, match="needs gradients"):
        DriseEngine.from_settings(None, get_method("gradcam"), cls, DriseSettings(), IMGSZ)


@pytest.fixture(scope="module")
def scene():
    return make_scene(3).image


@pytest.mark.parametrize("method, settings", [
    ("hirescam", CamSettings(layers="neck", fuse="sum")),
    ("drise", DriseSettings(masks=8, mask_batch=4)),
])
def test_explainer_gives_the_maps_of_its_engine_run_directly(scene, method, settings):
    kw = {f.name: getattr(settings, f.name) for f in fields(settings)}
    exp = yolocam.Explainer("demo-v8", method=method, imgsz=IMGSZ, **kw)
    [result] = exp.explain(scene, conf=0.05, max_det=3)
    assert result.detections and type(exp.runner) is engine_class(exp.method)
    assert (exp.engine, exp.drise) == ((None, exp.runner) if method == "drise" else (exp.runner, None))
    engine = build_engine(exp.adapter, get_method(method), get_target("class"), settings, exp.imgsz)
    assert engine is not exp.runner
    x, lbs = exp.adapter.preprocess([scene], exp.imgsz)
    calls = []
    direct = engine.run(x, conf=0.05, max_det=3, letterboxes=lbs, progress=calls.append)
    assert sum(calls) == engine.steps(1)[0] == (8 if method == "drise" else 1)  # what `run` reports
    maps = direct.heatmaps[0].cpu().numpy()
    assert len(maps) == len(result.detections)
    for k, (d, ref) in enumerate(zip(result.detections, direct.detections[0])):
        assert (d.anchor, d.cls) == (ref.anchor, ref.cls)
        assert d.heatmap.shape == scene.shape[:2] and maps[k].max() == pytest.approx(1.0)
        assert float(np.abs(d.heatmap - maps[k]).max()) < TOL


def test_plain_and_classify_boxes_map_to_the_original_image():
    out = instance_data_to_original("detect", [det(), det((-10.0, 0.0, 120.0, 60.0))], LB)
    assert [o.box for o in out] == [[20.0, 0.0, 120.0, 50.0], [0.0, 0.0, 200.0, 100.0]]  # clipped to the image
    assert out[0] == InstanceData([20.0, 0.0, 120.0, 50.0])  # nothing else for a plain detector
    whole = instance_data_to_original("classify", [det(), det(k=1)], LB)
    assert [o.box for o in whole] == [[0.0, 0.0, 200.0, 100.0]] * 2  # an image-level explanation


def test_an_oriented_box_maps_to_the_hand_computed_polygon_and_hull():
    dets = [det(rbox=(50.0, 32.0, 40.0, 16.0, math.pi / 2)), det(rbox=(5.0, 32.0, 40.0, 16.0, 0.0), k=1)]
    upright, cut = instance_data_to_original("obb", dets, LB)
    # centre (50, 32) -> (100, 50); size 40 x 16 -> 80 x 40; angle kept; a quarter turn stands it upright
    assert upright.rbox == pytest.approx([100.0, 50.0, 80.0, 40.0, math.pi / 2])
    assert np.allclose(upright.polygon, [[80, 90], [120, 90], [120, 10], [80, 10]], atol=1e-4)
    assert upright.box == pytest.approx([80.0, 10.0, 120.0, 90.0], abs=1e-4)
    # past the left edge: the corners are not clipped, their hull (the box) is
    assert np.allclose(cut.polygon, [[50, 70], [50, 30], [-30, 30], [-30, 70]], atol=1e-4)
    assert cut.box == pytest.approx([0.0, 30.0, 50.0, 70.0], abs=1e-4)
    assert upright.keypoints is None and upright.instance_mask is None


def test_keypoints_map_to_the_original_image_clipped():
    kpts = ((50.0, 32.0, 0.9), (0.0, 4.0, 0.2), (250.0, 60.0, 0.5))
    [pose] = instance_data_to_original("pose", [det(keypoints=kpts)], LB)
    assert np.allclose(pose.keypoints, [[100, 50, 0.9], [0, 0, 0.2], [200, 100, 0.5]], atol=1e-6)
    assert pose.box == [20.0, 0.0, 120.0, 50.0] and pose.rbox is None  # the plain detection's box
    [none] = instance_data_to_original("pose", [det()], LB)  # e.g. D-RISE on an exported model: no keypoints
    assert none.keypoints is None


def test_a_mask_maps_to_its_region_of_the_original_image():
    lb = letterbox_params((100, 200), 100, 32)  # as the model's preprocessing makes it: gain 0.5, 9 px on top
    assert (lb.shape, lb.top, lb.left, lb.gain_xy) == ((68, 100), 9, 0, (0.5, 0.5))
    masks = torch.zeros((1, 68, 100), dtype=torch.uint8)
    masks[0, 19:29, 20:40] = 1  # input rows 19..28, cols 20..39 -> original rows 20..39, cols 40..79
    [seg] = instance_data_to_original("segment", [det()], lb, masks)
    assert seg.box == [20.0, 6.0, 120.0, 46.0]
    assert np.array_equal(seg.instance_mask.input_mask(), masks[0].numpy().astype(bool))
    full = seg.instance_mask.full()
    assert full.shape == (100, 200)
    ys, xs = np.nonzero(full)
    assert abs(ys.min() - 20) <= 1 and abs(ys.max() - 39) <= 1 and abs(xs.min() - 40) <= 1 and abs(xs.max() - 79) <= 1
    assert abs(int(full.sum()) - 20 * 40) <= 2 * (20 + 40)  # about the area, to a pixel along the edges
    [no_mask] = instance_data_to_original("segment", [det()], lb, None)  # D-RISE makes no masks
    assert no_mask.instance_mask is None
