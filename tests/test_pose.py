"""Pose (Pose heads of v8, 11 and Pose26 of 26, built from ultralytics' YAML configs, random weights).

Boxes, classes, scores and keypoints agree with ultralytics' `predict` (NMS, or the end-to-end top-k of
26); `keypoint:K` targets read the anchor's own keypoint and have gradients; keypoints reach the
manifest, the npz and the overlays; the model is left as found; the CLI takes `--target keypoint:0`.
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
from yolocam.errors import YolocamError
from yolocam.model.adapter import ModelAdapter
from yolocam.model.detections import select_detections
from yolocam.model.pose import COCO_KEYPOINTS
from yolocam.model.targets import Jobs, for_task, get_target
from yolocam.output.results import DetectionExplanation, ImageExplanation

IMGSZ = 128
POSE_CONFIGS = {  # every family ultralytics ships a config of for this task
    "v8": "yolov8n-pose.yaml", "11": "yolo11n-pose.yaml", "26": "yolo26n-pose.yaml",
    "12": "yolo12n-pose.yaml", "v8-p6": "yolov8n-pose-p6.yaml",
}


def build_pose(cfg: str, nc: int = 1, seed: int = 0):
    """A random-weight pose model with calibrated BatchNorm, class logits around 0 and spread keypoints."""
    from ultralytics.nn.tasks import PoseModel

    return build_task_model(PoseModel, cfg, nc, {0: "person"}, ("cv4", "one2one_cv4", "cv4_kpts", "one2one_cv4_kpts"), seed)


_MODELS: dict = {}


def pose_model(family: str):
    if family not in _MODELS:
        _MODELS[family] = build_pose(POSE_CONFIGS[family])
    return _MODELS[family]


@pytest.fixture(scope="session")
def pose_image():
    """160 x 210 BGR: letterboxed to 96 x 128 at imgsz 128, with padding rows (a non-trivial mapping)."""
    rng = np.random.RandomState(2)
    img = (rng.rand(160, 210, 3) * 60).astype(np.uint8)
    img[30:140, 40:80] = (20, 200, 240)
    cv2.circle(img, (150, 60), 25, (240, 60, 30), -1)
    return img


@pytest.fixture(scope="session")
def saved_yolo(tmp_path_factory):
    """family -> an `ultralytics.YOLO` on a checkpoint of that family's pose model (task pose)."""
    return checkpoint_yolo_factory(tmp_path_factory.mktemp("pose"), "pose", pose_model)


@pytest.mark.parametrize("family,end2end", [("v8", None), ("11", None), ("12", None), ("v8-p6", None), ("26", None), ("26", False)])
def test_boxes_and_keypoints_equal_ultralytics_predict(family, end2end, pose_image, saved_yolo):
    yolo = saved_yolo(family)
    assert yolo.task == "pose"
    exp = yolocam.Explainer(yolo, imgsz=IMGSZ, method="gradcam", end2end=end2end)
    e2e = family == "26" and end2end is None
    assert exp.adapter.task == "pose" and exp.adapter.end2end == e2e
    ours = exp.explain(pose_image, conf=0.3, iou=0.5, max_det=20)[0].detections
    pred = yolo.predict(pose_image, imgsz=IMGSZ, conf=0.3, iou=0.5, max_det=20, verbose=False,
                        nms=not e2e if family == "26" else None)[0]
    assert pred.keypoints is not None and len(ours) == len(pred.boxes) >= 3
    # predict fuses Conv+BN: measured, boxes up to 1.6e-3 px apart (tolerance 1e-2), confidences 1.4e-6 (1e-4),
    # keypoints 0.013 px (0.1: decoded as 2 x stride x a raw output, up to 64 x on P6) and their scores 1.7e-5
    # (1e-3); neighbouring confidences come within 1e-6 of each other (12), so detections are matched by IoU
    pairs = assert_same_detections(ours, predicted(pred), box_px=1e-2, conf=1e-4, threshold=0.3)
    kpts = np.array([d.keypoints for d in ours])
    assert kpts.shape == (len(ours), 17, 3)
    theirs, theirs_conf = pred.keypoints.data.numpy(), pred.keypoints.conf.numpy()
    for i, j in pairs:
        np.testing.assert_allclose(kpts[i, :, :2], theirs[j, :, :2], rtol=0, atol=0.1)
        np.testing.assert_allclose(kpts[i, :, 2], theirs_conf[j], rtol=0, atol=1e-3)
    assert not np.allclose(kpts[..., :2], kpts[:1, :, :2])  # keypoints differ between detections


@pytest.mark.parametrize("family", ["v8", "11", "26"])
def test_keypoint_target_reads_the_anchors_keypoint_and_has_a_gradient(family, pose_image):
    adapter = ModelAdapter(pose_model(family))
    x, _ = adapter.preprocess([pose_image], IMGSZ)
    target = for_task(get_target("keypoint:left_elbow"), adapter.task, adapter.keypoint_names)
    assert target.index == 7 and target.n_components == 3
    assert for_task(get_target("keypoints"), adapter.task, adapter.keypoint_names).n_components == 51
    with torch.no_grad():
        _, head = adapter.forward(x)
        feats = [_[j] for j in adapter.head_inputs]
    det = select_detections(head, adapter.end2end, conf=0.3)[0][0]
    values = target(head[[0] * 3], Jobs.build([det] * 3, range(3), x.device))
    # independent recomputation from the keypoint branch's raw output at the detection's anchor
    h = adapter.head
    cells = [f.shape[-2] * f.shape[-1] for f in feats]
    level_start = sum(cells[:det.level])
    cell = det.anchor - level_start
    f = feats[det.level]
    gy, gx = divmod(cell, f.shape[-1])
    with torch.no_grad():
        if family == "26":
            trunk = h.one2one_cv4 if adapter.end2end else h.cv4
            last = h.one2one_cv4_kpts if adapter.end2end else h.cv4_kpts
            raw = last[det.level](trunk[det.level](f))
        else:
            raw = (h.one2one_cv4 if adapter.end2end else h.cv4)[det.level](f)
    rx, ry, rv = raw[0, 7 * 3:7 * 3 + 3, gy, gx]
    if family == "26":
        expected = torch.stack((rx + gx + 0.5, ry + gy + 0.5, rv))
    else:
        expected = torch.stack((rx * 2 + gx, ry * 2 + gy, rv))
    torch.testing.assert_close(values, expected, atol=1e-4, rtol=1e-4)
    stride = adapter.strides[det.level]
    torch.testing.assert_close(values[:2] * stride, torch.tensor(det.keypoints[7][:2]), atol=1e-3, rtol=1e-5)
    torch.testing.assert_close(values[2].sigmoid(), torch.tensor(det.keypoints[7][2]), atol=1e-5, rtol=1e-5)
    with adapter.explaining(), torch.enable_grad():
        x = x.clone().requires_grad_(True)
        _, live = adapter.forward(x)
        value = target(live[[0] * 3], Jobs.build([det] * 3, range(3), x.device))
        for c in range(3):
            (grad,) = torch.autograd.grad(value[c], x, retain_graph=True)
            assert grad.abs().max() > 0


@pytest.mark.parametrize("family", ["v8", "11", "26"])
def test_keypoint_maps_are_nonzero_and_agree_across_strategies(family, pose_image):
    maps = []
    for strategy, windows in (("loop", True), ("batched", False)):
        exp = yolocam.Explainer(pose_model(family), imgsz=IMGSZ, target="keypoint:0", strategy=strategy,
                                windows=windows, layers="neck", fuse="sum")
        assert exp.meta["target"] == "keypoint:0"
        res = exp.explain(pose_image, conf=0.3, max_det=2)[0]
        assert len(res.detections) == 2
        assert all(d.reason is None and d.heatmap.max() == 1.0 for d in res.detections)
        maps.append(np.stack([d.heatmap for d in res.detections]))
    np.testing.assert_allclose(maps[0], maps[1], atol=1e-4)


def test_bad_keypoint_targets_are_one_line_errors(pose_image):
    with pytest.raises(YolocamError, match="unknown keypoint 'elbow'.*left_elbow") as err:
        yolocam.Explainer(pose_model("v8"), imgsz=IMGSZ, target="keypoint:elbow")
    assert "\n" not in str(err.value)
    with pytest.raises(YolocamError, match="0..16"):
        yolocam.Explainer(pose_model("v8"), imgsz=IMGSZ, target="keypoint:17")
    with pytest.raises(YolocamError, match="needs a pose model") as err:
        yolocam.Explainer(_detect_model(), imgsz=IMGSZ, target="keypoint:5")
    assert "\n" not in str(err.value)
    with pytest.raises(YolocamError, match="keypoint index or name"):
        get_target("keypoint:")


def _detect_model():
    from conftest import family_model

    return family_model("v8")


def test_manifest_and_npz_hold_keypoints(pose_image, tmp_path):
    res = yolocam.Explainer(pose_model("11"), imgsz=IMGSZ).explain(pose_image, conf=0.3, max_det=3)[0]
    out = res.save(tmp_path / "out")
    manifest = json.loads((out / "manifest.json").read_text())
    entries = manifest["images"][0]["detections"]
    assert len(entries) == 3
    for e, d in zip(entries, res.detections):
        assert np.array(e["keypoints"]).shape == (17, 3)
        np.testing.assert_allclose(e["keypoints"], d.keypoints)
    with np.load(out / manifest["images"][0]["heatmaps"]) as npz:
        np.testing.assert_allclose(npz["keypoints"], [d.keypoints for d in res.detections], rtol=1e-6)
    back = yolocam.load_output(out)[0].detections
    assert [d.keypoints for d in back] == [e["keypoints"] for e in entries]
    det_res = yolocam.Explainer(_detect_model(), imgsz=IMGSZ).explain(pose_image, conf=0.3, max_det=2)[0]
    assert det_res.detections and all(d.keypoints is None and "keypoints" not in d.to_dict()
                                      for d in det_res.detections)


def test_overlay_draws_visible_keypoints_and_the_skeleton(tmp_path):
    """17 keypoints on a black image: visible ones are drawn (and limbs between them), hidden ones are not."""
    from yolocam.output.render import KEYPOINT_COLOUR, LIMB_COLOUR, box_crop

    kpts = [[20.0 + 9 * i, 30.0 + 6 * i, 0.9] for i in range(17)]
    kpts[3][2] = 0.2  # hidden
    kpts[5] = [60.0, 130.0, 0.9]
    kpts[7] = [140.0, 130.0, 0.9]  # limb 5-7: a horizontal line at y = 130
    det = DetectionExplanation([10, 10, 190, 150], 0, "person", 0.9, 0, 0, np.zeros((160, 200), np.float32),
                               keypoints=kpts)
    result = ImageExplanation(None, np.zeros((160, 200, 3), np.uint8), [det])
    saved = cv2.imread(str(result.save(tmp_path / "o", overlay_max_side=None) / "image" / "000_person.png"))
    for image in (result.plot(0), saved):
        for i, (x, y, v) in enumerate(kpts):
            pixel = image[int(y), int(x)].astype(int)
            if v > 0.5:
                assert np.abs(pixel - KEYPOINT_COLOUR).sum() < 60, i
            else:
                assert np.abs(pixel - KEYPOINT_COLOUR).sum() > 200, i
        assert np.abs(image[130, 100].astype(int) - LIMB_COLOUR).sum() < 60
    crop = box_crop(np.zeros((160, 200, 3), np.uint8), np.zeros((160, 200), np.float32), [50, 100, 150, 160],
                    size=200, context=0.0, keypoints=[[100.0, 130.0, 0.9], [60.0, 110.0, 0.1]])
    assert crop.shape[:2] == (200, 200)  # region (50, 60)-(150, 160), gain 2; the hidden keypoint is not drawn
    assert np.abs(crop[140, 100].astype(int) - KEYPOINT_COLOUR).sum() < 60
    assert crop[100, 20].sum() == 0


def test_explaining_leaves_the_pose_model_as_found(pose_image, saved_yolo):
    yolo = saved_yolo("v8")
    head = yolo.model.model[-1]

    def explain():  # also the head's anchor cache, which keypoint decoding must not touch
        cached = (head.anchors.clone(), head.strides.clone(), head.shape)
        for target in ("keypoint:0", "keypoints"):
            assert yolocam.Explainer(yolo, imgsz=IMGSZ, target=target).explain(pose_image, conf=0.3, max_det=2)[0].detections
        assert torch.equal(head.anchors, cached[0]) and torch.equal(head.strides, cached[1]) and head.shape == cached[2]

    assert_explaining_leaves_model_as_found(
        yolo, explain, lambda y: y.predict(pose_image, imgsz=IMGSZ, conf=0.3, verbose=False)[0].keypoints.data)


def test_cli_explains_a_pose_yaml_with_a_keypoint_target(pose_image, tmp_path):
    image = tmp_path / "scene.png"
    cv2.imwrite(str(image), pose_image)
    out = tmp_path / "out"
    code = main([
        "explain", str(image), "--model", "yolov8n-pose.yaml", "--target", "keypoint:0", "--out", str(out),
        "--imgsz", str(IMGSZ), "--conf", "0.0", "--max-det", "2",
    ])
    assert code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["target"] == "keypoint:0"
    for e in manifest["images"][0]["detections"]:
        assert np.array(e["keypoints"]).shape == (17, 3)
    assert len(COCO_KEYPOINTS) == 17


def test_keypoints_without_visibility_equal_predict(pose_image, tmp_path):
    """A model with 5 keypoints of 2 dims (x, y; as tiger-pose): keypoints as `predict`, 2 components per target."""
    from ultralytics import YOLO
    from ultralytics.nn.tasks import PoseModel

    torch.manual_seed(3)
    model = PoseModel("yolov8n-pose.yaml", nc=1, data_kpt_shape=(5, 2), verbose=False)
    ref = pose_model("v8")
    own = model.state_dict()
    model.load_state_dict({k: v if own[k].shape == v.shape else own[k] for k, v in ref.state_dict().items()})
    model.names = {0: "tiger"}
    model.eval()
    path = tmp_path / "kpt2.pt"
    torch.save({"model": model, "train_args": {"task": "pose"}}, path)
    yolo = YOLO(str(path))
    exp = yolocam.Explainer(yolo, imgsz=IMGSZ, target="keypoint:4")
    assert exp.engine.target.n_components == 2 and exp.adapter.keypoint_names == ["0", "1", "2", "3", "4"]
    res = exp.explain(pose_image, conf=0.3, max_det=3)[0]
    pred = yolo.predict(pose_image, imgsz=IMGSZ, conf=0.3, max_det=3, verbose=False)[0]
    assert len(res.detections) == len(pred.boxes) >= 1
    kpts, theirs = np.array([d.keypoints for d in res.detections]), pred.keypoints.data.numpy()
    assert kpts.shape == theirs.shape and kpts.shape[-1] == 2  # no visibility scores
    np.testing.assert_allclose(kpts, theirs, rtol=0, atol=0.1)  # fused Conv+BN, as above
    assert all(d.reason is None and d.heatmap.max() == 1.0 for d in res.detections)
    with pytest.raises(YolocamError, match="left_elbow|0..4"):
        yolocam.Explainer(yolo, imgsz=IMGSZ, target="keypoint:left_elbow")
