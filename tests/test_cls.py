"""Classification (Classify heads of v8 and 11, built from ultralytics' YAML configs, random weights).

The explained classes and their probabilities are ultralytics' `predict` top-5 (same preprocessing: short
side resized, centre crop); the `class` target is the model's own logit; maps are image-level, zero outside
the centre crop; Grad-CAM equals a hand computation; strategies agree; the model is left as found; box
targets and validation are refused in one line; the CLI writes a manifest and npz for a `-cls` YAML.
"""

import json

import cv2
import numpy as np
import pytest
import torch

import yolocam
from conftest import assert_explaining_leaves_model_as_found, calibrate_batchnorm, checkpoint_yolo_factory
from yolocam.cli import main
from yolocam.errors import YolocamError
from yolocam.model.adapter import ModelAdapter
from yolocam.model.detections import select_detections
from yolocam.model.targets import Jobs, for_task, get_target

IMGSZ = 64
CLS_CONFIGS = {  # every family ultralytics ships a classification config of (ResNet backbones included)
    "v8": "yolov8n-cls.yaml", "11": "yolo11n-cls.yaml", "12": "yolo12n-cls.yaml", "26": "yolo26n-cls.yaml",
    "v8-resnet50": "yolov8-cls-resnet50.yaml",  # yolo11-cls-resnet18 wraps torchvision: building it downloads
}
NC = 12


def build_cls(cfg: str, nc: int = NC, seed: int = 0):
    """A random-weight classifier: BatchNorm calibrated on random images, and logits spread (weights scaled up,
    biases of a few units) so that the top five classes are well apart."""
    from ultralytics.nn.tasks import ClassificationModel

    torch.manual_seed(seed)
    model = ClassificationModel(cfg, nc=nc, verbose=False)
    calibrate_batchnorm(model)
    with torch.no_grad():
        linear = model.model[-1].linear
        linear.weight.mul_(5.0)
        linear.bias.copy_(torch.linspace(3.0, -3.0, nc)[torch.randperm(nc)])
    model.names = {i: f"class{i}" for i in range(nc)}
    return model.eval()


_MODELS: dict = {}


def cls_model(family: str):
    if family not in _MODELS:
        _MODELS[family] = build_cls(CLS_CONFIGS[family])
    return _MODELS[family]


@pytest.fixture(scope="module")
def images():
    """A landscape 150 x 200 and a portrait 210 x 130 BGR image (centre crops across either axis)."""
    rng = np.random.RandomState(4)
    wide = (rng.rand(150, 200, 3) * 60).astype(np.uint8)
    wide[30:110, 60:140] = (20, 200, 240)
    tall = (rng.rand(210, 130, 3) * 80).astype(np.uint8)
    cv2.circle(tall, (65, 100), 40, (240, 60, 30), -1)
    return [wide, tall]


@pytest.fixture(scope="module")
def saved_yolo(tmp_path_factory):
    """family -> an `ultralytics.YOLO` on a checkpoint of that family's classifier (task classify)."""
    return checkpoint_yolo_factory(tmp_path_factory.mktemp("cls"), "classify", cls_model)


def crop_rect(shape, imgsz=IMGSZ):
    """(x0, y0, x1, y1) in original pixels that torchvision's Resize(imgsz) + CenterCrop(imgsz) keep (floats)."""
    h, w = shape
    g = imgsz / min(h, w)
    nw, nh = (imgsz, int(imgsz * h / w)) if w <= h else (int(imgsz * w / h), imgsz)
    left, top = round((nw - imgsz) / 2), round((nh - imgsz) / 2)
    gx, gy = nw / w, nh / h
    assert abs(gx - g) < 0.02 and abs(gy - g) < 0.02
    return left / gx, top / gy, (left + imgsz) / gx, (top + imgsz) / gy


@pytest.mark.parametrize("family", list(CLS_CONFIGS))
def test_top5_classes_and_probabilities_equal_ultralytics_predict(family, images, saved_yolo):
    yolo = saved_yolo(family)
    assert yolo.task == "classify"
    exp = yolocam.Explainer(yolo, imgsz=IMGSZ)
    assert exp.adapter.task == "classify" and exp.adapter.nc == NC and exp.adapter.strides == [32.0]
    results = exp.explain(images)
    for image, res in zip(images, results):
        pred = yolo.predict(image, imgsz=IMGSZ, verbose=False)[0]
        dets = res.detections
        assert [d.cls for d in dets] == pred.probs.top5
        np.testing.assert_allclose([d.conf for d in dets], pred.probs.top5conf.numpy(), atol=1e-5)
        assert np.diff([d.conf for d in dets]).max() < 0  # highest first, well apart
        assert [d.name for d in dets] == [f"class{c}" for c in pred.probs.top5]
        h, w = image.shape[:2]
        assert all(d.box == [0.0, 0.0, float(w), float(h)] and d.anchor == 0 and d.level == 0 for d in dets)
        # the whole probability vector, from our preprocessing and our logits
        x, _ = exp.adapter.preprocess([image], IMGSZ)
        with torch.no_grad():
            _, head = exp.adapter.forward(x)
        np.testing.assert_allclose(head.logits[0, 0].softmax(-1).numpy(), pred.probs.data.numpy(), atol=1e-5)  # predict fuses Conv+BN
    if family not in ("v8", "11"):  # the rest checks yolocam's own options, once per layout is enough
        return
    # a checkpoint path loads the same classifier; a batch of differently shaped images (equal centre crops)
    # gives the same maps (Grad-CAM: see the strategies test for why not the default ssgradcam++ to 1e-4)
    single = yolocam.Explainer(yolo, imgsz=IMGSZ, method="gradcam").explain(images)
    batched = yolocam.Explainer(yolo.ckpt_path, imgsz=IMGSZ, method="gradcam").explain(images, batch=2)
    assert len(single) == len(batched) == 2
    for one, two in zip(single, batched):
        # batched kernels differ in the last bits; measured: probabilities 1.5e-7 apart (tolerance 1e-5), maps
        # 1.1e-5 (tolerance 1e-3); the top five are at least 0.14 apart, so their order is exact
        assert [d.cls for d in one.detections] == [d.cls for d in two.detections] and len(one.detections) == 5
        np.testing.assert_allclose([d.conf for d in one.detections], [d.conf for d in two.detections], atol=1e-5)
        np.testing.assert_allclose(np.stack([d.heatmap for d in one.detections]),
                                   np.stack([d.heatmap for d in two.detections]), atol=1e-3)
    # conf is the least probability explained; max_det the number of classes; classes filters first
    top = results[0].detections
    few = exp.explain(images[0], conf=top[2].conf - 1e-6, max_det=10)[0].detections
    assert [d.cls for d in few] == [d.cls for d in top[:3]]
    assert len(exp.explain(images[0], max_det=NC + 5)[0].detections) == NC
    picked = exp.explain(images[0], classes=[top[3].cls, top[1].cls])[0].detections
    assert [d.cls for d in picked] == [top[1].cls, top[3].cls]


@pytest.mark.parametrize("family", ["v8", "11"])
def test_class_and_conf_targets_are_the_models_own_logit_and_probability(family, images):
    model = cls_model(family)
    adapter = ModelAdapter(model)
    x, _ = adapter.preprocess([images[1]], IMGSZ)
    with torch.no_grad():
        _, head = adapter.forward(x)
        probs, logits = model(x)  # eval: the Classify head returns (softmax, logits)
    dets = select_detections(head, adapter.end2end, conf=0.0, max_det=5)[0]
    assert [d.cls for d in dets] == probs[0].argsort(descending=True)[:5].tolist()
    jobs = Jobs.build(dets, [0] * len(dets), x.device)
    rows = head[[0] * len(dets)]
    cls_target = for_task(get_target("class"), adapter.task)
    conf_target = for_task(get_target("conf"), adapter.task)
    assert not cls_target.local and not conf_target.local  # image-level: no receptive-field windows
    index = torch.tensor([d.cls for d in dets])
    torch.testing.assert_close(cls_target(rows, jobs), logits[0, index], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(conf_target(rows, jobs), probs[0, index], atol=1e-6, rtol=1e-5)
    np.testing.assert_allclose([d.conf for d in dets], probs[0, index].numpy(), atol=1e-6)


@pytest.mark.parametrize("family", ["v8", "11"])
def test_maps_are_unit_float32_zero_outside_the_centre_crop_and_agree_across_strategies(family, images):
    maps, linear = [], []
    for strategy in ("loop", "batched"):
        exp = yolocam.Explainer(cls_model(family), imgsz=IMGSZ, strategy=strategy)  # defaults: fine+backbone, gate
        assert exp.layers_spec == "fine+backbone"
        maps.append([np.stack([d.heatmap for d in r.detections]) for r in exp.explain(images)])
        plain = yolocam.Explainer(cls_model(family), imgsz=IMGSZ, strategy=strategy, method="gradcam")
        linear.append([np.stack([d.heatmap for d in r.detections]) for r in plain.explain(images)])
    # Both strategies give the same gradients: Grad-CAM, linear in them, agrees to float rounding. (The default
    # ssgradcam++ is not compared: Grad-CAM++'s alpha = 1 / (2 + g sum A) has a pole, and on these random
    # classifiers 2 + g sum A comes within 1e-3 of it, which turns float rounding into differences of 1e-3.)
    assert len(linear[0]) == len(linear[1]) == len(maps[0]) == len(maps[1]) == len(images)
    for a, b in zip(*linear):
        np.testing.assert_allclose(a, b, atol=1e-4)  # measured: 8e-6
    for image, stack, plain in zip(images, maps[0], linear[0]):
        for m in (stack, plain):
            assert m.shape == (5, *image.shape[:2]) and m.dtype == np.float32
            assert m.min() >= 0 and np.isclose(m.max(axis=(1, 2)), 1.0).all()
        x0, y0, x1, y1 = crop_rect(image.shape[:2])
        inside = np.zeros(image.shape[:2], bool)
        inside[int(np.ceil(y0)):int(y1), int(np.ceil(x0)):int(x1)] = True
        assert (x0 > 1 or y0 > 1) and not inside.all()
        outside = np.ones_like(inside)
        outside[int(y0):int(np.ceil(y1)), int(x0):int(np.ceil(x1))] = False
        assert (stack[:, outside] == 0).all() and (plain[:, outside] == 0).all()
        assert (stack[:, inside].max(1) == 1).all()
        assert not np.allclose(stack[0], stack[1])  # a map per class


def gradcampp_conditioning(model, x, layer_ids, classes) -> float:
    """The largest |g sum A| / |2 + g sum A| over the positions with g > 0 of the layers, for each class logit:
    how much Grad-CAM++'s alpha = 1 / (2 + g sum A) magnifies a relative change of the gradient."""
    store, worst = {}, 0.0
    handles = [model.model[i].register_forward_hook(lambda m, i_, o, k=i: store.__setitem__(k, o)) for i in layer_ids]
    try:
        with torch.enable_grad():
            logits = model(x)[1]
            for c in classes:
                grads = torch.autograd.grad(logits[0, c], [store[i] for i in layer_ids], retain_graph=True)
                for i, g in zip(layer_ids, grads):
                    gsa = g * store[i].detach().sum((2, 3), keepdim=True)
                    worst = max(worst, float((gsa.abs() / (2 + gsa).abs())[g > 0].max()))
    finally:
        for h in handles:
            h.remove()
    return worst


@pytest.mark.parametrize("family", ["v8", "11"])
def test_the_default_method_agrees_across_strategies_away_from_the_pole(family, images):
    """The default method (ssgradcam++, gate fusion) on the backbone layers, where 2 + g sum A stays away from 0
    (measured conditioning at most 4.4 there, against up to 3e5 on the stride-4 layer): loop and batched
    maps agree to 1e-5 (measured 2.4e-6)."""
    model = cls_model(family)
    maps = []
    for strategy in ("loop", "batched"):
        exp = yolocam.Explainer(model, imgsz=IMGSZ, strategy=strategy, layers="backbone")
        assert exp.method.name == yolocam.DEFAULT_METHOD and exp.fuse == "gate"
        results = exp.explain(images)
        maps.append([np.stack([d.heatmap for d in r.detections]) for r in results])
    layer_ids = [t.top for t in exp.layers]
    for image, res in zip(images, results):
        x, _ = exp.adapter.preprocess([image], IMGSZ)
        assert gradcampp_conditioning(model, x, layer_ids, [d.cls for d in res.detections]) < 10
    for a, b in zip(*maps):
        assert a.shape == b.shape and a.shape[0] == 5 and np.isclose(a.max(axis=(1, 2)), 1.0).all()
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_gradcam_equals_a_hand_computation(images):
    """Grad-CAM on the stride-16 stage: relu(sum_c w_c A_c) with w_c the mean gradient of the class logit,
    computed here with ultralytics' own classify transforms, a forward hook and `torch.autograd.grad`."""
    from PIL import Image
    from ultralytics.data.augment import classify_transforms

    model = cls_model("v8")
    imgsz = 128  # an 8 x 8 map at stride 16
    exp = yolocam.Explainer(model, imgsz=imgsz, method="gradcam", layers=[6], fuse="sum")
    image = images[0]
    res = exp.explain(image, max_det=NC)[0]
    x = classify_transforms(imgsz)(Image.fromarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB)))[None]
    grabbed, compared = {}, 0
    handle = model.model[6].register_forward_hook(lambda m, i, o: grabbed.__setitem__("a", o))
    try:
        with torch.enable_grad():
            logits = model(x)[1]
            for det in res.detections:
                (grad,) = torch.autograd.grad(logits[0, det.cls], grabbed["a"], retain_graph=True)
                act = grabbed["a"].detach()
                cam = torch.relu((grad.mean((2, 3), keepdim=True) * act).sum(1, keepdim=True))
                cam = torch.nn.functional.interpolate(cam, size=(imgsz, imgsz), mode="bilinear", align_corners=False)
                cam = (cam / cam.max().clamp(min=1e-30))[0, 0].numpy()  # no positive evidence: all zeros
                assert det.compact_heatmap.shape == (imgsz, imgsz)  # the map over the centre crop
                np.testing.assert_allclose(det.compact_heatmap, cam, atol=1e-4)
                compared += cam.max() == 1
    finally:
        handle.remove()
    assert compared >= 3
    assert res.detections[0].cls == logits[0].argmax().item()


def test_explaining_leaves_the_classifier_as_found(images, saved_yolo):
    yolo = saved_yolo("11")

    def explain():
        for strategy in ("loop", "batched"):
            assert len(yolocam.Explainer(yolo, imgsz=IMGSZ, strategy=strategy).explain(images[0])[0].detections) == 5

    assert_explaining_leaves_model_as_found(
        yolo, explain, lambda y: y.predict(images[0], imgsz=IMGSZ, verbose=False)[0].probs.data)


def test_box_mask_keypoint_targets_drise_and_validation_are_refused_in_one_line(saved_yolo):
    for target in ("box", "all", "cluster", "mask", "keypoint:0"):
        with pytest.raises(YolocamError, match="classification|pose model") as err:
            yolocam.Explainer(cls_model("v8"), imgsz=IMGSZ, target=target)
        assert "\n" not in str(err.value)
    with pytest.raises(YolocamError, match="'box' needs boxes.*expected 'class', 'conf' or a callable"):
        yolocam.Explainer(cls_model("v8"), imgsz=IMGSZ, target="box")
    with pytest.raises(YolocamError, match="classification model") as err:
        yolocam.Explainer(cls_model("v8"), imgsz=IMGSZ, method="drise")
    assert "\n" not in str(err.value)
    from yolocam.evaluation.validation import validate

    with pytest.raises(YolocamError, match="validation of classification models is not supported") as err:
        validate(saved_yolo("v8"), imgsz=IMGSZ, verbose=False)
    assert "\n" not in str(err.value)


def test_layer_sets_of_a_classifier():
    adapter = ModelAdapter(cls_model("11"))
    groups = adapter.layer_groups()
    strides = adapter.layer_strides()
    assert groups["fine"] == [2] and strides[2] == 4
    assert groups["backbone"] == [4, 6, 9] and [strides[i] for i in groups["backbone"]] == [8, 16, 32]
    assert groups["head"] == groups["neck"] == [9] == adapter.head_inputs


def test_cli_explains_a_cls_yaml_into_manifest_and_npz(images, tmp_path):
    image = tmp_path / "scene.png"
    cv2.imwrite(str(image), images[1])
    out = tmp_path / "out"
    assert main(["explain", str(image), "--model", "yolov8n-cls.yaml", "--out", str(out), "--imgsz", str(IMGSZ),
                 "--save-format", "png"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    entry = manifest["images"][0]
    dets = entry["detections"]
    assert len(dets) == 5 and all(d["box"] == [0.0, 0.0, 130.0, 210.0] for d in dets)
    assert [d["conf"] for d in dets] == sorted((d["conf"] for d in dets), reverse=True)
    with np.load(out / entry["heatmaps"]) as npz:
        assert npz["heatmaps"].shape[0] == 5 and npz["classes"].tolist() == [d["cls"] for d in dets]
        x0, y0, x1, y1 = npz["region"].tolist()
    assert (x0, x1) == (0, 130) and 0 < y0 < y1 < 210  # the centre crop of a portrait image
    back = yolocam.load_output(out)[0].detections
    assert all(d.heatmap.shape == (210, 130) and d.heatmap[:y0 - 1].max() == 0 and d.heatmap.max() == 1.0
               for d in back)
    assert all((out / d["overlay"]).is_file() for d in dets)


def test_engine_copies_keep_the_classifier_target_and_compare_methods_is_refused(images):
    """Randomisation checks copy the engine (its target already made for classification); the method
    comparison, which scores maps against generated scenes' boxes, is refused in one line."""
    from yolocam.evaluation.compare import compare_methods
    from yolocam.evaluation.metrics import engine_copy

    exp = yolocam.Explainer(cls_model("v8"), imgsz=IMGSZ, method="gradcam")
    copy = engine_copy(exp.engine)
    x, _ = exp.adapter.preprocess([images[0]], IMGSZ)
    a, b = exp.engine.run(x, max_det=2), copy.run(x, max_det=2)
    assert [d.cls for d in a.detections[0]] == [d.cls for d in b.detections[0]]
    torch.testing.assert_close(a.heatmaps[0], b.heatmaps[0])
    with pytest.raises(YolocamError, match="got a classification model") as err:
        compare_methods(cls_model("v8"), scenes=1, imgsz=IMGSZ, methods=["gradcam"])
    assert "\n" not in str(err.value)
