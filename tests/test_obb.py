"""Oriented boxes (OBB heads of v8, 11 and 26, built from ultralytics' YAML configs, random weights).

Selection agrees with ultralytics' `predict` (rotated NMS, or the end-to-end top-k of 26); every
kept rotated box gets a map; the `box` target has an angle component with a gradient; rotated
boxes reach the manifest, the npz and the overlays (as polygons); the model is left as found.
"""

import json

import cv2
import numpy as np
import pytest
import torch

import yolocam
from conftest import (assert_explaining_leaves_model_as_found, assert_same_detections, build_task_model,
                      checkpoint_yolo_factory, predicted)
from yolocam.cli import main
from yolocam.model.adapter import ModelAdapter
from yolocam.model.detections import select_detections
from yolocam.model.targets import Jobs, for_task, get_target
from yolocam.output.results import DetectionExplanation, ImageExplanation

OBB_CONFIGS = {  # every family ultralytics ships a config of for this task
    "v8": "yolov8n-obb.yaml", "11": "yolo11n-obb.yaml", "26": "yolo26n-obb.yaml",
    "12": "yolo12n-obb.yaml",
}
IMGSZ = 128


def build_obb(cfg: str, nc: int = 3, seed: int = 0):
    """A random-weight OBB model with calibrated BatchNorm, class logits around 0 and varied angles."""
    from ultralytics.nn.tasks import OBBModel

    return build_task_model(OBBModel, cfg, nc, {0: "plane", 1: "ship", 2: "tank"}, ("cv4", "one2one_cv4"), seed)


_MODELS: dict = {}


def obb_model(family: str):
    if family not in _MODELS:
        _MODELS[family] = build_obb(OBB_CONFIGS[family])
    return _MODELS[family]


@pytest.fixture(scope="session")
def obb_image():
    """160 x 210 BGR: letterboxed to 96 x 128 at imgsz 128, with padding rows (a non-trivial mapping)."""
    rng = np.random.RandomState(1)
    img = (rng.rand(160, 210, 3) * 60).astype(np.uint8)
    img[30:70, 40:90] = (20, 200, 240)
    cv2.fillPoly(img, [np.array([[120, 100], [170, 80], [190, 120], [140, 140]], np.int32)], (240, 60, 30))
    return img


@pytest.fixture(scope="session")
def saved_yolo(tmp_path_factory):
    """family -> an `ultralytics.YOLO` on a checkpoint of that family's OBB model (task obb)."""
    return checkpoint_yolo_factory(tmp_path_factory.mktemp("obb"), "obb", obb_model)


@pytest.mark.parametrize("family,end2end", [("v8", None), ("11", None), ("12", None), ("26", None), ("26", False)])
def test_rotated_boxes_equal_ultralytics_predict(family, end2end, obb_image, saved_yolo):
    """Rotated NMS (v8, 11, and 26's one-to-many branch) and the end-to-end top-k (26) as `predict`."""
    yolo = saved_yolo(family)
    assert yolo.task == "obb"
    exp = yolocam.Explainer(yolo, imgsz=IMGSZ, method="gradcam", end2end=end2end)
    e2e = family == "26" and end2end is None
    assert exp.adapter.task == "obb" and exp.adapter.end2end == e2e
    ours = exp.explain(obb_image, conf=0.3, iou=0.5, max_det=20)[0].detections
    pred = yolo.predict(obb_image, imgsz=IMGSZ, conf=0.3, iou=0.5, max_det=20, verbose=False,
                        nms=not e2e if family == "26" else None)[0]
    assert pred.obb is not None and len(ours) == len(pred.obb) >= 3
    # predict fuses Conv+BN: measured, rotated boxes up to 2.4e-3 px apart, confidences 4e-7; neighbouring
    # confidences come within 1e-6 of each other (11), so rotated boxes are matched by their hulls' IoU
    pairs = assert_same_detections(ours, predicted(pred, "obb"), box_px=1e-2, conf=1e-4, threshold=0.3)
    theirs_rb, theirs_poly = pred.obb.xywhr.numpy(), pred.obb.xyxyxyxy.numpy()
    for i, j in pairs:
        np.testing.assert_allclose(ours[i].rbox[:4], theirs_rb[j, :4], atol=1e-2, rtol=1e-4)
        assert abs(ours[i].rbox[4] - theirs_rb[j, 4]) <= 1e-4
        np.testing.assert_allclose(ours[i].polygon, theirs_poly[j], atol=1e-2, rtol=1e-4)
    h, w = obb_image.shape[:2]
    for d in ours:  # `box` is the polygon's hull, clipped to the image
        poly = np.array(d.polygon)
        lo, hi = poly.min(0), poly.max(0)
        hull = np.clip([lo[0], lo[1], hi[0], hi[1]], 0, [w, h, w, h])
        np.testing.assert_allclose(d.box, hull, atol=1e-2)
    kw = dict(imgsz=IMGSZ, conf=0.3, classes=[1, 2], max_det=5)  # with a class filter
    ours = exp.explain(obb_image, **{k: v for k, v in kw.items() if k != "imgsz"})[0].detections
    pred = yolo.predict(obb_image, verbose=False, nms=not e2e if family == "26" else None, **kw)[0]
    assert {d.cls for d in ours} <= {1, 2} and len(ours) == len(pred.obb) > 0
    pairs = assert_same_detections(ours, predicted(pred, "obb"), box_px=1e-2, conf=1e-4, threshold=0.3)
    for i, j in pairs:
        np.testing.assert_allclose(ours[i].rbox, pred.obb.xywhr.numpy()[j], atol=1e-2, rtol=1e-4)


def test_a_batch_selects_as_single_images(obb_image):
    """A batch of two runs other convolution kernels than one image: the last bits differ. Measured, batched
    against single: rotated boxes 2.7e-3 px apart here (1.8e-3 on another machine; tolerance 0.05 px), angles
    1.2e-5 rad (1e-3), confidences 8e-7 (1e-4), maps 1.2e-5 (1e-3). Anchors and classes are exact."""
    other = np.ascontiguousarray(obb_image[::-1, ::-1])
    exp = yolocam.Explainer(obb_model("v8"), imgsz=IMGSZ, method="gradcam")
    batched = exp.explain([obb_image, other], conf=0.3, max_det=4, batch=2)
    for res, img in zip(batched, (obb_image, other)):
        single = exp.explain(img, conf=0.3, max_det=4)[0]
        assert len(res.detections) == len(single.detections) == 4
        pairs = assert_same_detections(res.detections, single.detections, box_px=0.05, conf=1e-4, threshold=0.3)
        for i, j in pairs:
            a, b = res.detections[i], single.detections[j]
            np.testing.assert_allclose(a.rbox[:4], b.rbox[:4], rtol=0, atol=0.05)
            assert abs(a.rbox[4] - b.rbox[4]) <= 1e-3
            np.testing.assert_allclose(a.heatmap, b.heatmap, rtol=0, atol=1e-3)


@pytest.mark.parametrize("family", ["v8", "11", "26"])
def test_every_rotated_box_gets_a_map_for_every_target(family, obb_image):
    for target in ("class", "box", "all"):
        exp = yolocam.Explainer(obb_model(family), imgsz=IMGSZ, target=target)
        res = exp.explain(obb_image, conf=0.3, max_det=3)[0]
        assert len(res.detections) == 3, (family, target)
        for d in res.detections:
            heat = d.heatmap
            assert heat.shape == obb_image.shape[:2] and heat.dtype == np.float32 and np.isfinite(heat).all()
            assert heat.max() == 1.0 and (heat < 0.5).mean() > 0.05, (family, target)  # non-trivial
            assert d.reason is None and len(d.rbox) == 5 and np.array(d.polygon).shape == (4, 2)


@pytest.mark.parametrize("family", ["v8", "26"])
def test_box_target_has_the_rotated_components_and_the_angle_has_a_gradient(family, obb_image):
    adapter = ModelAdapter(obb_model(family))
    x, _ = adapter.preprocess([obb_image], IMGSZ)
    target = for_task(get_target("box"), adapter.task)
    assert target.n_components == 5 and for_task(get_target("all"), adapter.task).n_components == 6
    with torch.no_grad():
        _, head = adapter.forward(x)
    det = select_detections(head, adapter.end2end, conf=0.3)[0][0]
    values = target(head[[0] * 5], Jobs.build([det] * 5, range(5), x.device))
    stride = adapter.strides[det.level]
    expected = torch.tensor([v / stride for v in det.rbox[:4]] + [det.rbox[4]])
    torch.testing.assert_close(values, expected)
    with adapter.explaining(), torch.enable_grad():  # the angle component, differentiated to the input
        x = x.clone().requires_grad_(True)
        _, live = adapter.forward(x)
        angle = target(live, Jobs.build([det], [4], x.device))
        (grad,) = torch.autograd.grad(angle.sum(), x)
    assert grad.abs().max() > 0
    assert torch.allclose(live.angles[0, det.anchor], torch.tensor(det.rbox[4]))


def test_angle_maps_agree_across_strategies_and_a_callable_angle_target(obb_image):
    """The box target's maps (angle included) are the same on crops (windows, head crops) and whole; a
    callable reading the angle alone gets a non-zero map."""
    model = obb_model("v8")
    maps = []
    for strategy, windows in (("loop", True), ("loop", False), ("batched", False)):
        exp = yolocam.Explainer(model, imgsz=IMGSZ, target="box", strategy=strategy, windows=windows,
                                method="hirescam", layers="neck", fuse="sum")  # windows replay the neck
        maps.append(np.stack([d.heatmap for d in exp.explain(obb_image, conf=0.3, max_det=3)[0].detections]))
    assert maps[0].shape[0] == 3
    np.testing.assert_allclose(maps[0], maps[1], atol=1e-3)  # measured: equal
    np.testing.assert_allclose(maps[0], maps[2], atol=1e-3)  # batched kernels: measured 6.5e-6
    seen = []

    def angle(outputs, det):
        seen.append(det.rbox)
        return outputs.angles[0, det.anchor]

    res = yolocam.Explainer(model, imgsz=IMGSZ, target=angle).explain(obb_image, conf=0.3, max_det=2)[0]
    assert len(seen) == 2 and all(r is not None for r in seen)
    assert all(d.reason is None and d.heatmap.max() == 1.0 for d in res.detections)


def test_manifest_and_npz_hold_rotated_boxes(obb_image, tmp_path):
    res = yolocam.Explainer(obb_model("11"), imgsz=IMGSZ).explain(obb_image, conf=0.3, max_det=3)[0]
    out = res.save(tmp_path / "out")
    manifest = json.loads((out / "manifest.json").read_text())
    entries = manifest["images"][0]["detections"]
    assert len(entries) == 3
    for e, d in zip(entries, res.detections):
        assert e["rbox"] == pytest.approx(d.rbox) and np.array(e["polygon"]).shape == (4, 2)
        np.testing.assert_allclose(e["polygon"], d.polygon)
    with np.load(out / manifest["images"][0]["heatmaps"]) as npz:
        np.testing.assert_allclose(npz["rboxes"], [d.rbox for d in res.detections], rtol=1e-6)
    back = yolocam.load_output(out)[0].detections
    assert [d.polygon for d in back] == [e["polygon"] for e in entries]
    # detection models keep their manifest as before: no rotated fields
    det_res = yolocam.Explainer(_detect_model(), imgsz=IMGSZ).explain(obb_image, conf=0.3, max_det=2)[0]
    assert det_res.detections and all(d.rbox is None and d.polygon is None for d in det_res.detections)
    assert all("rbox" not in d.to_dict() and "polygon" not in d.to_dict() for d in det_res.detections)


def _detect_model():
    from conftest import family_model

    return family_model("v8")


def test_overlay_draws_the_rotated_polygon(tmp_path):
    """A 30-degree box on a black image: its edges are drawn in the class colour, its hull's corners are not."""
    from yolocam.model.obb import corners, hull
    from yolocam.output.labels import class_colour

    rbox = torch.tensor([[100.0, 80.0, 100.0, 40.0, np.pi / 6]])
    poly = corners(rbox)[0].tolist()
    box = hull(rbox)[0].tolist()
    det = DetectionExplanation(box, 1, "ship", 0.9, 0, 0, np.zeros((160, 200), np.float32), rbox=rbox[0].tolist(),
                               polygon=poly)
    result = ImageExplanation(None, np.zeros((160, 200, 3), np.uint8), [det])
    saved = cv2.imread(str(result.save(tmp_path / "o", overlay_max_side=None) / "image" / "000_ship.png"))
    for image, colour in ((result.plot(0), np.array(class_colour(1))), (saved, np.array(class_colour(1)))):
        p = np.array(poly)
        for a, b in zip(p, np.roll(p, -1, axis=0)):  # the midpoint of every edge is drawn
            mx, my = np.round((a + b) / 2).astype(int)
            patch = image[my - 1:my + 2, mx - 1:mx + 2].reshape(-1, 3).astype(int)
            assert (np.abs(patch - colour).sum(1) < 60).any(), (mx, my)
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        for cx, cy in ((x1 + 2, y2 - 2), (x2 - 2, y2 - 2)):  # hull corners away from the label: not drawn
            assert image[cy, cx].sum() == 0, (cx, cy)


def test_explaining_leaves_the_obb_model_as_found(obb_image, saved_yolo):
    yolo = saved_yolo("v8")

    def explain():
        for target in ("class", "box"):
            assert yolocam.Explainer(yolo, imgsz=IMGSZ, target=target).explain(obb_image, conf=0.3, max_det=3)[0].detections

    assert_explaining_leaves_model_as_found(
        yolo, explain, lambda y: y.predict(obb_image, imgsz=IMGSZ, conf=0.3, verbose=False)[0].obb.data)


def test_cli_explains_an_obb_yaml(obb_image, tmp_path):
    image = tmp_path / "scene.png"
    cv2.imwrite(str(image), obb_image)
    out = tmp_path / "out"
    rc = main(["explain", str(image), "--model", "yolov8n-obb.yaml", "--out", str(out), "--conf", "0",
               "--max-det", "2", "--imgsz", str(IMGSZ)])
    assert rc == 0
    entries = json.loads((out / "manifest.json").read_text())["images"][0]["detections"]
    assert len(entries) == 2 and all(len(e["rbox"]) == 5 and len(e["polygon"]) == 4 for e in entries)
    assert all((out / e["overlay"]).is_file() for e in entries)


def test_val_runs_obb_models_through_their_own_validator(saved_yolo, tmp_path):
    """`yolocam val` on an OBB checkpoint runs ultralytics' OBB validator (tests/test_task_validation.py)."""
    path = saved_yolo("v8").ckpt_path
    rc = main(["val", "--model", str(path), "--imgsz", str(IMGSZ), "--scenes", "2", "--out", str(tmp_path / "val")])
    metrics = json.loads((tmp_path / "val" / "metrics.json").read_text())
    assert rc == 0 and metrics["settings"]["task"] == "obb"