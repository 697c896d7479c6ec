"""The engine on real YOLO models of every family: shapes, agreement with ultralytics, model state."""

import numpy as np
import pytest
import torch

import yolocam
from yolocam.model.adapter import ModelAdapter
from yolocam.errors import YolocamError

from conftest import FAMILY_CONFIGS, assert_same_detections, family_model, predicted
from ultralytics.nn.tasks import DetectionModel

IMGSZ = 96


@pytest.mark.parametrize("family", list(FAMILY_CONFIGS))
def test_every_method_on_every_family(family, image):
    model = family_model(family)
    for method in yolocam.list_methods():
        exp = yolocam.Explainer(model, method=method, imgsz=IMGSZ)
        assert exp.adapter.family == family
        res = exp.explain(image, conf=0.3, max_det=3)[0]
        assert 1 <= len(res.detections) <= 3, (family, method)
        confs = [d.conf for d in res.detections]
        assert confs == sorted(confs, reverse=True)
        for d in res.detections:
            heat = d.heatmap
            assert heat.shape == image.shape[:2] and heat.dtype == np.float32
            assert np.isfinite(heat).all() and heat.min() >= 0
            # a map is scaled to peak 1, or all zeros only where the engine says why (a `reason`)
            assert (heat.max() == 1.0 and d.reason is None) or (heat.max() == 0.0 and d.reason), (family, method)
            assert 0 <= d.box[0] <= d.box[2] <= image.shape[1] and 0 <= d.box[1] <= d.box[3] <= image.shape[0]
            assert d.name == exp.names[d.cls]
        # and at least one map per method and family is a real map, not flat: measured, the least such share of
        # pixels below 0.5 (the best map of each family and method) is 0.87 (v5u gradcam++, v9 eigencam)
        below = [float((d.heatmap < 0.5).mean()) for d in res.detections if d.heatmap.max() == 1.0]
        assert below and max(below) > 0.5, (family, method, below)


@pytest.mark.parametrize("family", ["v8", "26", "v10"])
def test_detections_equal_ultralytics_predict(family, image, tmp_path):
    from ultralytics import YOLO

    model = family_model(family)
    path = tmp_path / "m.pt"
    torch.save({"model": model, "train_args": {}}, path)
    yolo = YOLO(str(path))
    exp = yolocam.Explainer(yolo, imgsz=128, method="gradcam")
    ours = exp.explain(image, conf=0.3, max_det=50)[0].detections
    e2e = exp.adapter.end2end
    assert e2e == (family in ("26", "v10"))
    pred = yolo.predict(image, imgsz=128, conf=0.3, max_det=50, verbose=False, nms=False if e2e else None)[0]
    assert len(ours) == 50 and len(pred.boxes) == 50
    # predict fuses Conv+BN: measured, boxes up to 1.6e-3 px apart (tolerance 1e-2), confidences 1e-6 (1e-4);
    # neighbouring confidences come within 1.4e-6 of each other, so detections are matched by IoU, not by rank
    assert_same_detections(ours, predicted(pred), box_px=1e-2, conf=1e-4, threshold=0.3)


def test_anchor_and_level_point_at_the_surviving_prediction(v8_model, image):
    exp = yolocam.Explainer(v8_model, imgsz=128, method="gradcam")
    res = exp.explain(image, conf=0.3, max_det=10)[0]
    x, _ = exp.adapter.preprocess([image], 128)
    with torch.no_grad():
        _, head = exp.adapter.forward(x)
    h, w = x.shape[-2:]
    assert (h, w) == (96, 128)  # 150x200 scaled by 0.64, already a multiple of 32
    sizes = [(h // int(s)) * (w // int(s)) for s in exp.adapter.strides]
    bounds = np.cumsum([0] + sizes)
    for d in res.detections:
        assert bounds[d.level] <= d.anchor < bounds[d.level + 1]
        assert abs(torch.sigmoid(head.logits[0, d.anchor, d.cls]).item() - d.conf) < 1e-6


def test_model_is_left_as_found(image, tmp_path):
    from ultralytics import YOLO

    path = tmp_path / "m.pt"
    torch.save({"model": family_model("v8"), "train_args": {}}, path)
    yolo = YOLO(str(path))
    inner = yolo.model
    inner.train()
    inner.model[3].eval()  # mixed training flags
    params = list(inner.parameters())
    params[0].requires_grad_(False)
    params[5].grad = torch.full_like(params[5], 0.5)
    handle = inner.model[4].register_forward_hook(lambda *a: None)
    head = inner.model[-1]
    before_cache = (head.shape, head.anchors.clone(), head.strides.clone())
    flags = [m.training for m in inner.modules()]
    req = [p.requires_grad for p in params]
    hooks = [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks)) for m in inner.modules()]
    state = {k: v.clone() for k, v in inner.state_dict().items()}
    pred_before = yolo.predict(image, imgsz=128, conf=0.3, verbose=False)[0].boxes.data.clone()
    flags = [m.training for m in inner.modules()]  # predict may switch modes of a copy only

    exp = yolocam.Explainer(yolo, imgsz=128)
    assert exp.explain(image, conf=0.3)[0].detections

    assert [m.training for m in inner.modules()] == flags
    assert [p.requires_grad for p in params] == req
    assert all(p.grad is None for i, p in enumerate(params) if i != 5)
    assert torch.equal(params[5].grad, torch.full_like(params[5], 0.5))
    assert [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
            for m in inner.modules()] == hooks
    assert head.shape == before_cache[0] and torch.equal(head.anchors, before_cache[1])
    assert all(torch.equal(v, inner.state_dict()[k]) for k, v in state.items())
    pred_after = yolo.predict(image, imgsz=128, conf=0.3, verbose=False)[0].boxes.data
    assert torch.equal(pred_before, pred_after)
    handle.remove()


def test_zero_detections_give_an_empty_list(v8_model, image, tmp_path):
    exp = yolocam.Explainer(v8_model, imgsz=IMGSZ)
    res = exp.explain(image, conf=1.0)[0]
    assert res.detections == []
    out = res.save(tmp_path / "out")
    assert (out / "manifest.json").exists()
    assert res.plot().shape == image.shape


def test_box_target_is_in_stride_units(v8_model, image):
    from yolocam.model.detections import select_detections
    from yolocam.model.targets import Jobs, get_target

    adapter = ModelAdapter(v8_model)
    x, _ = adapter.preprocess([image], 128)
    with torch.no_grad():
        _, head = adapter.forward(x)
    det = select_detections(head, False, conf=0.3)[0][0]
    jobs = Jobs.build([det] * 4, range(4), x.device)
    values = get_target("box")(head[[0, 0, 0, 0]], jobs)
    stride = adapter.strides[det.level]
    torch.testing.assert_close(values, torch.tensor(det.box) / stride)
    jobs1 = Jobs.build([det], [0], x.device)
    logit = get_target("class")(head, jobs1)
    assert torch.sigmoid(logit).item() == pytest.approx(det.conf, abs=1e-6)
    assert get_target("conf")(head, jobs1).item() == pytest.approx(det.conf, abs=1e-6)
    cluster = get_target("cluster")(head, jobs1).item()
    assert cluster >= det.conf * 0.999  # includes the detection itself with IoU 1


def test_callable_target_equals_builtin(v8_model, image):
    def my_logit(outputs, det):
        return outputs.logits[0, det.anchor, det.cls]

    a = yolocam.Explainer(v8_model, imgsz=IMGSZ, target="class").explain(image, conf=0.3, max_det=3)[0]
    b = yolocam.Explainer(v8_model, imgsz=IMGSZ, target=my_logit).explain(image, conf=0.3, max_det=3)[0]
    assert len(a.detections) == len(b.detections) == 3
    for da, db in zip(a.detections, b.detections):
        np.testing.assert_allclose(da.heatmap, db.heatmap, atol=1e-5)  # the same computation (measured: equal)


@pytest.mark.parametrize("target", ["box", "all", "cluster", "conf"])
@pytest.mark.parametrize("fuse", ["sum", "max", "origin", "aligned", "gate"])
def test_targets_and_fusions_run(v8_model, image, target, fuse):
    res = yolocam.Explainer(v8_model, imgsz=IMGSZ, target=target, fuse=fuse).explain(image, conf=0.3, max_det=2)[0]
    assert res.detections
    for d in res.detections:
        assert np.isfinite(d.heatmap).all() and 0 <= d.heatmap.min() and d.heatmap.max() <= 1


def test_layer_specs(v8_model, image):
    adapter = ModelAdapter(v8_model)
    groups = adapter.layer_groups()
    assert groups["head"] == [15, 18, 21]
    assert groups["neck"] == [12, 15, 18, 21]
    assert groups["backbone"] == [4, 6, 9]
    assert groups["fine"] == [2]  # C2f after the second stride-2 conv: stride 4
    for spec in ["fine", "backbone", "head", [15, 21], [v8_model.model[15]], [v8_model.model[18].cv2]]:
        res = yolocam.Explainer(v8_model, imgsz=IMGSZ, layers=spec).explain(image, conf=0.3, max_det=2)[0]
        assert res.detections and all(np.isfinite(d.heatmap).all() for d in res.detections)


@pytest.mark.parametrize("cfg, fine", [("yolov8n.yaml", [2]), ("yolo11n.yaml", [2]), ("yolov8n-p2.yaml", [2])])
def test_fine_layers_are_the_backbones_stride_4_stage(cfg, fine):
    """Strides come from a probe forward that leaves the model as found (mode, BN statistics, grads)."""
    from yolocam.model.adapter import ModelAdapter

    model = DetectionModel(cfg, nc=2, verbose=False).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    adapter = ModelAdapter(model)
    strides = adapter.layer_strides()
    assert strides[:3] == [2, 4, 4] and strides[adapter.head_inputs[-1]] == 32
    assert adapter.layer_groups()["fine"] == fine
    assert model.training and [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_user_reshape_transform_applies_to_activations_and_gradients(v8_model, image):
    """A transform that mirrors each map must mirror the heatmap (no horizontal padding here)."""
    from yolocam.model.layers import flatten_output

    def mirror(out):
        return torch.cat([t.flip(-1) for t in flatten_output(out)], 1)

    kw = dict(imgsz=128, layers=[15, 18, 21], method="gradcam++", fuse="sum")
    plain = yolocam.Explainer(v8_model, **kw).explain(image, conf=0.3, max_det=2)[0]
    flipped = yolocam.Explainer(v8_model, reshape_transform=mirror, **kw).explain(image, conf=0.3, max_det=2)[0]
    assert len(plain.detections) == len(flipped.detections) == 2
    for a, b in zip(plain.detections, flipped.detections):
        assert a.heatmap.max() == 1.0
        np.testing.assert_allclose(b.heatmap, a.heatmap[:, ::-1], atol=1e-4)


def test_align_levels_puts_levels_on_the_finest_grid():
    from yolocam.model.layers import align_levels, default_reshape

    maps = [torch.ones(2, 3, 8, 8), torch.full((2, 5, 4, 4), 2.0), torch.full((2, 1, 2, 2), 3.0)]
    out = align_levels(maps)
    assert out.shape == (2, 9, 8, 8)
    assert torch.all(out[:, 3:8] == 2.0) and torch.all(out[:, 8] == 3.0)
    assert default_reshape(tuple(maps)).shape == (2, 9, 8, 8)
    assert default_reshape({"a": maps[0], "b": maps[1]}).shape == (2, 8, 8, 8)
    with pytest.raises(YolocamError, match="expected \\(B, C, H, W\\)"):
        default_reshape(torch.ones(2, 10, 4))


def test_bad_inputs(v8_model, image, tmp_path):
    exp = yolocam.Explainer(v8_model, imgsz=IMGSZ)
    with pytest.raises(YolocamError, match="not found"):
        exp.explain(str(tmp_path / "missing.jpg"))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"this is not a jpeg")
    with pytest.raises(YolocamError, match="corrupt"):
        exp.explain(str(bad))
    with pytest.raises(YolocamError, match="gradcam\\+\\+.*ssgradcam"):
        yolocam.Explainer(v8_model, method="nope")
    with pytest.raises(YolocamError, match="class, conf, box, all, cluster"):
        yolocam.Explainer(v8_model, target="nope")
    with pytest.raises(YolocamError, match="neck, head, backbone, fine"):
        yolocam.Explainer(v8_model, layers="nope")
    with pytest.raises(YolocamError, match="out of range"):
        yolocam.Explainer(v8_model, layers=[99])
    with pytest.raises(YolocamError, match="sum, max, origin"):
        yolocam.Explainer(v8_model, fuse="nope")
    with pytest.raises(YolocamError, match="model file not found"):
        yolocam.Explainer(str(tmp_path / "nope.pt"))
    with pytest.raises(YolocamError, match="expected a checkpoint path"):
        yolocam.Explainer(42)
    with pytest.raises(YolocamError, match="shape"):
        exp.explain(np.zeros((4, 4, 2), np.uint8))


def test_a_model_without_a_detect_or_classify_head_is_rejected():
    from ultralytics.nn.tasks import ClassificationModel

    model = ClassificationModel("yolov8n-cls.yaml", nc=3, verbose=False)  # classifiers are explained (test_cls.py)
    odd = torch.nn.Identity()
    odd.f, odd.i = -1, len(model.model) - 1
    model.model[-1] = odd
    with pytest.raises(YolocamError, match="not a detection model: its last layer is Identity.*or a Classify head"):
        yolocam.Explainer(model)


def test_grayscale_rgba_16bit_and_a_bad_file_in_a_folder(v8_model, image, tmp_path):
    import cv2

    exp = yolocam.Explainer(v8_model, imgsz=IMGSZ)
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    rgba = cv2.cvtColor(image, cv2.COLOR_BGR2BGRA)
    deep = image.astype(np.uint16) * 257
    for i, im in enumerate([gray, rgba, deep]):
        cv2.imwrite(str(tmp_path / f"{i}.png"), im)
    (tmp_path / "3.png").write_bytes(b"\x89PNG broken")
    results = exp.explain(str(tmp_path), conf=0.3, max_det=2)
    assert [r.error is None for r in results] == [True, True, True, False]
    assert "3.png" in results[3].error
    ref = exp.explain(image, conf=0.3, max_det=2)[0]
    for r in results[1:3]:  # RGBA and 16-bit carry the same colours as the original
        np.testing.assert_allclose(r.detections[0].box, ref.detections[0].box, atol=1e-3)
    assert results[0].detections[0].heatmap.shape == gray.shape
