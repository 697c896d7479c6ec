"""Instance segmentation (Segment heads of v8, 11 and 26, built from ultralytics' YAML configs, random weights).

Boxes, classes, scores and masks agree with ultralytics' `predict`; the `mask` target (mean mask logit
over the instance's own mask) equals a recomputation by hand from the head's coefficients and
prototypes and gives non-zero maps; masks reach the manifest (as polygons) and the overlays; the
model is left as found; the CLI explains a seg YAML with `--target mask`.
"""

import json

import cv2
import numpy as np
import pytest
import torch

import yolocam
from conftest import (assert_explaining_leaves_model_as_found, assert_same_detections, build_task_model,
                      checkpoint_yolo_factory, family_model, predicted)
from yolocam.cli import main
from yolocam.errors import YolocamError
from yolocam.model.adapter import ModelAdapter
from yolocam.model.detections import select_detections
from yolocam.model.targets import Jobs, get_target
from yolocam.output.reader import load_output

SEG_CONFIGS = {  # every family ultralytics ships a config of for this task
    "v8": "yolov8n-seg.yaml", "11": "yolo11n-seg.yaml", "26": "yolo26n-seg.yaml",
    "12": "yolo12n-seg.yaml", "v9": "yolov9c-seg.yaml", "v8-p6": "yolov8n-seg-p6.yaml",
}
IMGSZ = 128


def build_seg(cfg: str, nc: int = 3, seed: int = 0):
    """A random-weight segmentation model: calibrated BatchNorm, class logits around 0, varied masks."""
    from ultralytics.nn.tasks import SegmentationModel

    return build_task_model(SegmentationModel, cfg, nc, {0: "cell", 1: "leaf", 2: "stone"}, (), seed)


_MODELS: dict = {}


def seg_model(family: str):
    if family not in _MODELS:
        _MODELS[family] = build_seg(SEG_CONFIGS[family])
    return _MODELS[family]


@pytest.fixture(scope="session")
def seg_image():
    """160 x 210 BGR: letterboxed to 96 x 128 at imgsz 128, with padding rows (a non-trivial mapping)."""
    rng = np.random.RandomState(1)
    img = (rng.rand(160, 210, 3) * 60).astype(np.uint8)
    img[30:70, 40:90] = (20, 200, 240)
    cv2.circle(img, (150, 110), 30, (240, 60, 30), -1)
    return img


@pytest.fixture(scope="session")
def saved_yolo(tmp_path_factory):
    """family -> an `ultralytics.YOLO` on a checkpoint of that family's seg model (task segment)."""
    return checkpoint_yolo_factory(tmp_path_factory.mktemp("seg"), "segment", seg_model)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


@pytest.mark.parametrize("family,end2end", [("v8", None), ("11", None), ("12", None), ("v9", None), ("v8-p6", None), ("26", None), ("26", False)])
def test_boxes_and_masks_equal_ultralytics_predict(family, end2end, seg_image, saved_yolo):
    from ultralytics.utils.ops import scale_masks

    yolo = saved_yolo(family)
    assert yolo.task == "segment"
    exp = yolocam.Explainer(yolo, imgsz=IMGSZ, method="gradcam", end2end=end2end)
    e2e = family == "26" and end2end is None
    assert exp.adapter.task == "segment" and exp.adapter.end2end == e2e
    ours = exp.explain(seg_image, conf=0.3, iou=0.5, max_det=8)[0].detections
    pred = yolo.predict(seg_image, imgsz=IMGSZ, conf=0.3, iou=0.5, max_det=8, verbose=False,
                        nms=not e2e if family == "26" else None)[0]
    ours = [d for d in ours if d.instance_mask.input_mask().any()]  # predict drops boxes with empty masks
    assert pred.masks is not None and len(ours) == len(pred.boxes) >= 2
    # predict fuses Conv+BN: detections matched by IoU (float rounding may swap close confidences' ranks)
    pairs = assert_same_detections(ours, predicted(pred), box_px=1e-2, conf=1e-4, threshold=0.3)
    data = pred.masks.data.bool().numpy()  # (N, H, W) at the input size
    full = (scale_masks(pred.masks.data[None].float(), seg_image.shape[:2])[0] > 0.5).numpy()
    exact = 0
    for i, k in pairs:
        d = ours[i]
        assert d.instance_mask.input_mask().shape == data[k].shape
        assert iou(d.instance_mask.input_mask(), data[k]) >= 0.98  # predict fuses conv+bn: a pixel may flip
        assert d.mask.shape == seg_image.shape[:2] and d.mask.dtype == bool
        assert iou(d.mask, full[k]) >= 0.98
        if np.array_equal(d.instance_mask.input_mask(), data[k]):  # same mask: the same polygon as masks.xy
            np.testing.assert_allclose(d.instance_mask.polygon(), pred.masks.xy[k], atol=1e-3)
            exact += 1
        filled = np.zeros(seg_image.shape[:2], np.uint8)  # the segments (outer outlines) enclose the mask
        cv2.fillPoly(filled, [np.round(np.array(s)).astype(np.int32) for s in d.segments], 1)
        near = cv2.dilate(filled, np.ones((5, 5), np.uint8)).astype(bool)  # within about one input pixel
        assert d.segments and (near & d.mask).sum() >= 0.98 * d.mask.sum()
    assert exact >= len(ours) // 2  # most masks are identical pixel for pixel


def _forward(family, image):
    adapter = ModelAdapter(seg_model(family))
    x, _ = adapter.preprocess([image], IMGSZ)
    with adapter.explaining(), torch.no_grad():
        outputs, head = adapter.forward(x)
    return adapter, x, head


@pytest.mark.parametrize("family", ["v8", "26"])
def test_mask_target_equals_a_recomputation_from_coefficients_and_prototypes(family, seg_image):
    from ultralytics.utils.ops import crop_mask

    adapter, x, head = _forward(family, seg_image)
    nm = adapter.head.nm
    assert head.coeffs.shape == (1, head.logits.shape[1], nm)
    assert head.protos.shape == (1, nm, x.shape[2] // 4, x.shape[3] // 4)
    dets = select_detections(head, adapter.end2end, conf=0.3, max_det=4)[0]
    assert len(dets) >= 2
    coeffs, protos = head.coeffs.clone().requires_grad_(True), head.protos.clone().requires_grad_(True)
    rows = torch.zeros(len(dets), dtype=torch.long)
    outputs = type(head)(head.logits[rows], head.boxes[rows], head.strides, head.anchors, head.levels, None,
                         coeffs[rows], protos[rows])
    values = get_target("mask")(outputs, Jobs.build(dets, [0] * len(dets), "cpu"))
    mh, mw = protos.shape[-2:]
    for k, d in enumerate(dets):  # by hand: logits at prototype resolution, > 0, cropped to the box
        logits = (head.coeffs[0, d.anchor] @ head.protos[0].view(nm, -1)).view(mh, mw)
        box = torch.tensor([d.box]) * torch.tensor([mw / x.shape[3], mh / x.shape[2]] * 2)
        region = crop_mask((logits > 0).byte()[None], box)[0].bool()
        region = region if region.any() else crop_mask(torch.ones(1, mh, mw, dtype=torch.uint8), box)[0].bool()
        expected = logits[region].mean()
        assert torch.allclose(values[k], expected, atol=1e-5), (k, float(values[k]), float(expected))
    assert values.abs().sum() > 0
    values.sum().backward()
    assert coeffs.grad.abs().sum() > 0 and protos.grad.abs().sum() > 0


def test_a_batch_gives_the_masks_of_single_images(seg_image):
    exp = yolocam.Explainer(seg_model("v8"), imgsz=IMGSZ, method="gradcam")
    other = np.ascontiguousarray(seg_image[:, ::-1])
    batched = exp.explain([seg_image, other], conf=0.3, max_det=3, batch=2)
    for image, res in zip((seg_image, other), batched):
        single = exp.explain(image, conf=0.3, max_det=3)[0].detections
        assert len(single) == len(res.detections) >= 1
        # batched kernels differ in the last bits (measured: boxes 7.5e-4 px, confidences 1.2e-7), and two of
        # these confidences are 6e-6 apart, so their order may swap: detections are matched by IoU, not by rank
        pairs = assert_same_detections(res.detections, single, box_px=0.05, conf=1e-4, threshold=0.3)
        for i, j in pairs:
            assert iou(res.detections[i].mask, single[j].mask) >= 0.98  # measured: 1.0


@pytest.mark.parametrize("family", ["v8", "11", "26"])
def test_mask_target_gives_nonzero_maps(family, seg_image):
    exp = yolocam.Explainer(seg_model(family), imgsz=IMGSZ, target="mask", method="gradcam")
    dets = exp.explain(seg_image, conf=0.3, max_det=3)[0].detections
    assert len(dets) >= 1
    assert all(d.reason is None and d.heatmap.max() > 0 for d in dets)


def test_mask_maps_agree_across_strategies(seg_image):
    maps = [[d.heatmap for d in yolocam.Explainer(seg_model("v8"), imgsz=IMGSZ, target="mask", method="hirescam",
                                                  strategy=s).explain(seg_image, conf=0.3, max_det=3)[0].detections]
            for s in ("loop", "batched")]
    assert len(maps[0]) == len(maps[1]) >= 1
    for a, b in zip(*maps):
        np.testing.assert_allclose(a, b, atol=1e-3)  # batched kernels: measured 1.8e-5


def test_a_callable_target_reads_coefficients_and_prototypes(seg_image):
    seen = []

    def first_coefficient(outputs, det):
        seen.append(outputs.protos.shape)
        return outputs.coeffs[0, det.anchor, 0]

    dets = yolocam.Explainer(seg_model("11"), imgsz=IMGSZ, target=first_coefficient,
                             method="gradcam").explain(seg_image, conf=0.3, max_det=2)[0].detections
    assert dets and seen and all(d.heatmap.max() > 0 for d in dets)


def test_drise_explains_seg_models_by_their_boxes(seg_image):
    dets = yolocam.Explainer(seg_model("v8"), imgsz=IMGSZ, method="drise", masks=16,
                             progress=False).explain(seg_image, conf=0.3, max_det=2)[0].detections
    assert dets and all(d.mask is None for d in dets)


def test_mask_target_on_a_detection_model_is_one_clear_error(seg_image):
    with pytest.raises(YolocamError, match="segmentation model") as err:
        yolocam.Explainer(family_model("v8"), imgsz=IMGSZ, target="mask").explain(seg_image)
    assert "\n" not in str(err.value)


def test_manifest_holds_segments_and_overlays_draw_them(seg_image, tmp_path):
    res = yolocam.Explainer(seg_model("v8"), imgsz=IMGSZ, method="gradcam").explain(seg_image, conf=0.3, max_det=2)[0]
    res.save(tmp_path)
    entries = json.loads((tmp_path / "manifest.json").read_text())["images"][0]["detections"]
    assert len(entries) == len(res.detections) >= 1
    for e, d in zip(entries, res.detections):
        assert e["segments"] and all(len(s) >= 3 and len(s[0]) == 2 for s in e["segments"])
        np.testing.assert_allclose(np.concatenate(e["segments"]), np.concatenate(d.segments), atol=0.01)
    back = load_output(tmp_path)[0].detections  # read back: the same outlines, the mask filled from them
    for a, b in zip(res.detections, back):
        np.testing.assert_allclose(np.concatenate(b.segments), np.concatenate(a.segments), atol=0.01)
        assert b.mask.shape == a.mask.shape and (b.mask & a.mask).sum() >= 0.5 * a.mask.sum()
    d = res.detections[0]
    plain = res.plot(0)
    d.instance_mask = None  # the same overlay without the outline differs on the outline only
    assert (plain != res.plot(0)).any(-1).sum() > 0


def test_detection_models_have_no_masks(seg_image, tmp_path):
    res = yolocam.Explainer(family_model("v8"), imgsz=IMGSZ).explain(seg_image, conf=0.3, max_det=1)[0]
    assert res.detections and res.detections[0].mask is None and res.detections[0].segments is None
    assert "segments" not in res.detections[0].to_dict()


def test_explaining_leaves_the_seg_model_as_found(seg_image, saved_yolo):
    yolo = saved_yolo("v8")

    def explain():
        assert yolocam.Explainer(yolo, imgsz=IMGSZ, target="mask").explain(seg_image, conf=0.3, max_det=2)[0].detections

    assert_explaining_leaves_model_as_found(
        yolo, explain, lambda y: y.predict(seg_image, imgsz=IMGSZ, conf=0.3, verbose=False)[0].masks.data)


def test_cli_explains_a_seg_yaml_with_the_mask_target(seg_image, tmp_path):
    image = tmp_path / "scene.png"
    cv2.imwrite(str(image), seg_image)
    out = tmp_path / "out"
    rc = main(["explain", str(image), "--model", "yolov8n-seg.yaml", "--target", "mask", "--out", str(out),
               "--conf", "0", "--max-det", "2", "--imgsz", "96"])
    assert rc == 0
    entries = json.loads((out / "manifest.json").read_text())["images"][0]["detections"]
    assert len(entries) == 2 and all("segments" in e for e in entries)
    assert all((out / e["overlay"]).is_file() for e in entries)


def test_cli_refuses_the_mask_target_on_a_detection_model_in_one_line(seg_image, tmp_path, capsys):
    image = tmp_path / "scene.png"
    cv2.imwrite(str(image), seg_image)
    rc = main(["explain", str(image), "--model", "yolov8n.yaml", "--target", "mask", "--out", str(tmp_path / "o"),
               "--imgsz", "96"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "segmentation model" in err[0] and "yolov8n-seg" in err[0]
