"""yolocam.validate on segmentation, pose and oriented-box models: each task's own ultralytics validator.

Random-weight task models (v8 and 26 families) on generated task scenes (`demo.task_labels`): the metrics
equal a plain `YOLO(checkpoint).val(...)`; every kept prediction with conf >= conf is explained, labelled by
the validator's own box tp matrix (rotated IoU for OBB); OBB pointing / energy are recomputed here against
the rotated ground-truth boxes with an independent polygon test; the model is left as found.
"""

import argparse
import functools
import math
from pathlib import Path
from unittest import mock

import cv2
import numpy as np
import pytest
import torch
from ultralytics import YOLO
from ultralytics.nn.tasks import ClassificationModel, OBBModel, PoseModel, SegmentationModel
from ultralytics.utils.metrics import DetMetrics

from conftest import build_task_model, nms_without_time_limit
from yolocam.demo.scenes import CLASS_NAMES, make_scene
from yolocam.errors import YolocamError
from yolocam.evaluation.instance_metrics import energy_in_mask, pointing_in_mask, rbox_mask
from yolocam.evaluation.task_validators import explaining_validator, localise_rotated, rbox_distance
from yolocam.evaluation.validation import Collector, ExplainingValidator, default_dataset, main_val, validate

IMGSZ = 96
BATCH = 4
SCENES = 5
CONF = 0.5
NAMES = dict(enumerate(CLASS_NAMES))
CASES = {  # (task, family): (model class, config, extra head branches whose biases build_task_model spreads)
    ("segment", "v8"): (SegmentationModel, "yolov8n-seg.yaml", ()),
    ("pose", "26"): (functools.partial(PoseModel, data_kpt_shape=(5, 3)), "yolo26n-pose.yaml",
                     ("cv4", "one2one_cv4", "cv4_kpts", "one2one_cv4_kpts")),
    ("obb", "26"): (OBBModel, "yolo26n-obb.yaml", ("cv4", "one2one_cv4")),
    ("obb", "v8"): (OBBModel, "yolov8n-obb.yaml", ("cv4",)),
}
OWN_MAP = {"segment": "metrics/mAP50-95(M)", "pose": "metrics/mAP50-95(P)", "obb": "metrics/mAP50-95(B)"}


def tame(model, task: str, shift: float = 4.0, seed: int = 1):
    """Rescale the last convolutions of the box, class and angle branches so that, on a scene, their outputs
    vary across the image with a set spread: class logits about N(-shift, 1.5) (a few dozen kept per image),
    boxes about a cell or two, angles within a turn (float32 corners stay exact to a pixel)."""
    head = model.model[-1]
    convs = {}
    for name in ("cv2", "one2one_cv2", "cv3", "one2one_cv3", *(("cv4", "one2one_cv4") if task == "obb" else ())):
        for branch in getattr(head, name, None) or []:
            convs[branch[-1] if isinstance(branch, torch.nn.Sequential) else branch] = name
    outs = {}
    hooks = [c.register_forward_hook(lambda mod, i, o: outs.__setitem__(mod, o)) for c in convs]
    img = cv2.resize(make_scene(99).image, (128, 128))[..., ::-1].copy()
    with torch.no_grad():
        model(torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255)
        for h in hooks:
            h.remove()
        g = torch.Generator().manual_seed(seed)
        for conv, name in convs.items():
            std = outs[conv].std((0, 2, 3)).clamp(min=1e-6)
            target = 1.5 if "cv3" in name else 0.3
            conv.weight.mul_((target / std).view(-1, 1, 1, 1))
            base = -outs[conv].mean((0, 2, 3)) * target / std
            noise = torch.randn(conv.bias.shape, generator=g)
            if "cv3" in name:
                conv.bias.copy_(base - shift + 0.5 * noise)
            elif "cv2" in name and head.reg_max == 1:
                conv.bias.copy_(base + 1.5 + 0.3 * noise)
            elif "cv2" in name:  # DFL bins: distances of about one cell
                bins = -0.6 * torch.arange(head.reg_max, dtype=conv.bias.dtype)
                conv.bias.copy_(base + bins.repeat(4) + 0.3 * noise)
            else:
                conv.bias.copy_(base + noise)
    return model


@pytest.fixture(scope="module", autouse=True)
def no_nms_time_limit():
    """Every validation here, ours and the plain ones, with ultralytics' NMS free of its wall-clock limit."""
    with nms_without_time_limit():
        yield


@pytest.fixture(scope="module")
def task_data(tmp_path_factory):
    """task -> its generated validation scenes' data.yaml (cached)."""
    root, cache = tmp_path_factory.mktemp("taskdata"), {}

    def get(task):
        if task not in cache:
            cache[task] = default_dataset(root, scenes=SCENES, seed=3, task=task)
        return cache[task]

    return get


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """(task, family) -> path of a saved random-weight checkpoint of that task (cached)."""
    root, cache = tmp_path_factory.mktemp("taskckpt"), {}

    def get(task, family):
        if (task, family) not in cache:
            model_class, cfg, extra = CASES[(task, family)]
            model = tame(build_task_model(model_class, cfg, len(NAMES), NAMES, extra), task)
            path = root / f"{task}_{family}.pt"
            torch.save({"model": model, "train_args": {"task": task}}, path)
            cache[(task, family)] = path
        return cache[(task, family)]

    return get


_RUNS: dict = {}


def run(task, family, checkpoint, task_data):
    """One explained validation, recording the validator's per-image statistics and each `_record` call."""
    if (task, family) not in _RUNS:
        stats, calls = [], []
        update_stats, record = DetMetrics.update_stats, Collector._record

        def spy_stats(self, stat):
            stats.append({k: np.array(v, copy=True) if isinstance(v, np.ndarray) else v for k, v in stat.items()})
            return update_stats(self, stat)

        def spy_record(self, pred, pb, tp, dets, maps):
            start = len(self.records)
            record(self, pred, pb, tp, dets, maps)
            calls.append((pb, maps.clone(), self.records[start:]))

        with mock.patch.object(DetMetrics, "update_stats", spy_stats), \
                mock.patch.object(Collector, "_record", spy_record):
            report = validate(str(checkpoint(task, family)), data=task_data(task), imgsz=IMGSZ, batch=BATCH,
                              device="cpu", conf=CONF, method="gradcam", verbose=False, worst=4)
        _RUNS[(task, family)] = report, stats, calls
    return _RUNS[(task, family)]


@pytest.mark.parametrize("task,family", list(CASES))
def test_metrics_equal_plain_val(task, family, checkpoint, task_data):
    """The metrics, and under them every image's statistics (box tp, mask / pose tp, confidences, classes),
    equal a plain ultralytics val's. (Random weights rarely match a ground truth: mask and pose mAP are 0
    here, box mAP small; the per-prediction statistics are what the equality rests on; the task demos
    below give mask and pose mAP above 0.)"""
    report, ours, _ = run(task, family, checkpoint, task_data)
    theirs, update_stats = [], DetMetrics.update_stats

    def spy_stats(self, stat):
        theirs.append({k: np.array(v, copy=True) if isinstance(v, np.ndarray) else v for k, v in stat.items()})
        return update_stats(self, stat)

    with mock.patch.object(DetMetrics, "update_stats", spy_stats):
        plain = YOLO(str(checkpoint(task, family))).val(data=str(task_data(task)), imgsz=IMGSZ, batch=BATCH,
                                                        device="cpu", plots=False, verbose=False)
    expected = {k: float(v) for k, v in plain.results_dict.items()}
    assert set(report.metrics) == set(expected) and OWN_MAP[task] in expected
    for key in ("metrics/mAP50-95(B)", OWN_MAP[task], "metrics/mAP50(B)", "fitness"):
        assert report.metrics[key] == pytest.approx(expected[key], abs=1e-9), key
    assert report.settings["task"] == task
    assert [s["im_name"] for s in ours] == [s["im_name"] for s in theirs]
    for a, b in zip(ours, theirs):
        assert set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a if k != "im_name")
    assert sum(int(s["conf"].size) for s in ours) > 0


def _with_stats(fn):
    """fn()'s result and the per-image statistics the validator recorded meanwhile."""
    stats, update_stats = [], DetMetrics.update_stats

    def spy_stats(self, stat):
        stats.append({k: np.array(v, copy=True) if isinstance(v, np.ndarray) else v for k, v in stat.items()})
        return update_stats(self, stat)

    with mock.patch.object(DetMetrics, "update_stats", spy_stats):
        return fn(), stats


@pytest.mark.parametrize("task,demo", [("segment", "demo-seg"), ("pose", "demo-pose")])
def test_a_task_demo_on_its_own_scenes_has_a_task_map_above_0_equal_to_plain_val(task, demo, tmp_path):
    """The random-weight cases above have mask and pose mAP 0 on both sides; a trained task demo on its own
    generated scenes finds them, so the task's own mAP is compared where it is not 0."""
    from yolocam.demo.models import demo_model_path

    data = default_dataset(tmp_path, scenes=3, seed=3, task=task)
    kw = dict(data=str(data), imgsz=160, batch=BATCH, device="cpu")
    report, ours = _with_stats(lambda: validate(demo, conf=CONF, method="gradcam", verbose=False, worst=0, **kw))
    plain, theirs = _with_stats(lambda: YOLO(str(demo_model_path(demo))).val(plots=False, verbose=False, **kw))
    expected = {k: float(v) for k, v in plain.results_dict.items()}
    # measured at imgsz 160 on these 3 scenes: mask mAP50-95 0.53, pose 0.54 (box 0.62, 0.57)
    assert expected[OWN_MAP[task]] > 0.3 and expected["metrics/mAP50-95(B)"] > 0.3, expected
    assert report.metrics == pytest.approx(expected, abs=1e-9)
    assert [s["im_name"] for s in ours] == [s["im_name"] for s in theirs] and len(ours) == 3
    for a, b in zip(ours, theirs):
        assert set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a if k != "im_name")
    own_tp = "tp_m" if task == "segment" else "tp_p"
    assert sum(int(s[own_tp][:, 0].sum()) for s in ours) >= 5  # the task's own true positives at IoU 0.5
    assert report.counts["unmatched_predictions"] == 0 and report.counts["label_mismatches"] == 0
    assert len(report.predictions) > 0 and sum(r["tp"] for r in report.predictions) > 0


@pytest.mark.parametrize("task,family", list(CASES))
def test_every_kept_prediction_explained_and_labelled_by_the_validator(task, family, checkpoint, task_data):
    report, stats, _ = run(task, family, checkpoint, task_data)
    assert report.counts["unmatched_predictions"] == 0
    assert report.counts["label_mismatches"] == 0
    assert len(stats) == report.counts["images"] == SCENES
    assert ("tp_m" in stats[0]) == (task == "segment") and ("tp_p" in stats[0]) == (task == "pose")
    by_image = {}
    for rec in report.predictions:
        by_image.setdefault(Path(rec["image"]).name, []).append(rec)
    for stat in stats:
        recs = sorted(by_image.get(stat["im_name"], []), key=lambda r: r["index"])
        assert len(recs) == int((stat["conf"] >= CONF).sum())  # every kept prediction with conf >= CONF
        for rec in recs:
            assert rec["tp"] == bool(stat["tp"][rec["index"], 0])  # the validator's own box tp (IoU 0.5)
            assert rec["conf"] == pytest.approx(float(stat["conf"][rec["index"]]), abs=1e-6)
            assert rec["cls"] == int(stat["pred_cls"][rec["index"]])
    assert 10 <= len(report.predictions) <= 200 * SCENES
    assert all(r["energy"] is not None for r in report.predictions)
    rows = {r["class"]: r for r in report.table}
    assert rows["all"]["tp"] + rows["all"]["missed"] == rows["all"]["instances"]
    if task == "obb":  # the rotated boxes ride along with their axis-aligned hulls
        assert all(len(r["rbox"]) == 5 and len(r["box"]) == 4 for r in report.predictions)
        assert all(len(m["rbox"]) == 5 for m in report.missed)


def _in_polygon(shape, poly: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixel centres inside the convex polygon `poly` (4, 2), by the sign of each edge's cross product."""
    ys, xs = np.mgrid[0:shape[0], 0:shape[1]] + 0.5
    sides = []
    for k in range(4):
        (x0, y0), (x1, y1) = poly[k], poly[(k + 1) % 4]
        sides.append((x1 - x0) * (ys - y0) - (y1 - y0) * (xs - x0))
    sides = np.stack(sides)
    return (sides >= -1e-9).all(0) | (sides <= 1e-9).all(0)


def _polygon(rbox) -> np.ndarray:
    cx, cy, w, h, a = (float(v) for v in rbox)
    u, v = np.array([math.cos(a), math.sin(a)]), np.array([-math.sin(a), math.cos(a)])
    return np.array([[cx, cy] + su * w / 2 * u + sv * h / 2 * v for su, sv in ((1, 1), (1, -1), (-1, -1), (-1, 1))])


@pytest.mark.parametrize("family", ["26", "v8"])
def test_obb_pointing_and_energy_against_rotated_ground_truth(family, checkpoint, task_data):
    _, _, calls = run("obb", family, checkpoint, task_data)
    checked = 0
    for pb, maps, recs in calls:
        (gain, gain_w), (left, top) = pb["ratio_pad"]  # rectangular batches: the two gains differ slightly
        h0, w0 = (int(v) for v in pb["ori_shape"])
        t, lft = int(round(float(top))), int(round(float(left)))
        crop = maps[:, t:t + int(round(h0 * float(gain))), lft:lft + int(round(w0 * float(gain_w)))].double().numpy()
        gts = pb["bboxes"].cpu().double().numpy() - np.array([lft, t, 0, 0, 0])
        masks = [_in_polygon(crop.shape[1:], _polygon(g)) for g in gts]
        for rec in recs:
            heat, ref = np.clip(crop[rec["index"]], 0, None), rec["gt"]
            assert ref >= 0
            np.testing.assert_allclose(np.array(rec["gt_rbox"][:4]) * float(gain), gts[ref][:4], atol=1e-3)
            top_px = heat == heat.max()
            pointing = (top_px & masks[ref]).sum() / top_px.sum() if heat.max() > 0 else 0.0
            energy = (heat * masks[ref]).sum() / heat.sum() if heat.sum() > 0 else 0.0
            others = np.zeros_like(masks[ref])
            for k, m in enumerate(masks):
                if k != ref:
                    others |= m
            other = (heat * others).sum() / heat.sum() if heat.sum() > 0 else 0.0
            assert rec["pointing"] == pytest.approx(pointing, abs=1e-6)
            assert rec["energy"] == pytest.approx(energy, abs=1e-5)
            assert rec["energy_other"] == pytest.approx(other, abs=1e-5)
            checked += 1
    assert checked > 10
    assert any(rec["tp"] for _, _, recs in calls for rec in recs)  # rotated-IoU true positives among them


def test_localise_rotated_hand_case():
    """A 45-degree ground-truth square: maps inside it, on the other box, and split between them."""
    gts = torch.tensor([[20.0, 20.0, 14.0, 14.0, math.pi / 4], [45.0, 15.0, 10.0, 6.0, 0.0]])
    maps = torch.zeros(3, 40, 60)
    maps[0, 20, 20] = 1.0  # centre of the rotated square
    maps[1, 15, 45] = 1.0  # centre of the other box
    maps[2, 20, 20], maps[2, 15, 45], maps[2, 2, 2] = 1.0, 0.5, 0.5
    preds = torch.tensor([[20.0, 20.0, 14.0, 14.0, math.pi / 4 + math.pi / 2]] * 3)  # the same square, w/h turned
    loc = localise_rotated(maps, preds, [0, 0, 0], gts, [0, 1], tp=torch.tensor([True, True, True]))
    assert loc.reference.tolist() == [0, 0, 0]
    assert loc.pointing.tolist() == [1.0, 0.0, 1.0]
    assert loc.energy.tolist() == pytest.approx([1.0, 0.0, 0.5])
    assert loc.energy_other.tolist() == pytest.approx([0.0, 1.0, 0.25])
    mask = rbox_mask((40, 60), gts[0])
    assert loc.energy[2] == pytest.approx(energy_in_mask(maps[2], mask)) and pointing_in_mask(maps[2], mask) == 1.0
    assert not mask[20, 10] and mask[20, 19] and not mask[13, 13]  # a diamond: its bounding box's corner is out
    turned = torch.tensor([[20.0, 20.0, 14.0, 14.0, math.pi / 4 + math.pi]])  # same rectangle, other angle
    assert float(rbox_distance(turned, gts[:1])[0, 0]) < 1e-4


def test_validator_class_per_task():
    from ultralytics.models.yolo import detect, obb, pose, segment

    assert ExplainingValidator is explaining_validator("detect")
    assert issubclass(ExplainingValidator, detect.DetectionValidator)
    assert issubclass(explaining_validator("segment"), segment.SegmentationValidator)
    assert issubclass(explaining_validator("pose"), pose.PoseValidator)
    assert issubclass(explaining_validator("obb"), obb.OBBValidator)
    with pytest.raises(YolocamError, match="classification models is not supported"):
        explaining_validator("classify")


def test_validate_leaves_model_as_found(checkpoint, task_data):
    """ultralytics' validator itself fuses Conv+BN and sets eval mode (a plain `val` does too); after that,
    explaining leaves weights, requires_grad, grads, hooks, modes and predictions as found."""
    yolo = YOLO(str(checkpoint("obb", "26")))
    image = cv2.imread(str(next((Path(task_data("obb")).parent / "images" / "val").glob("*.jpg"))))
    predict = lambda: yolo.predict(image, imgsz=IMGSZ, conf=CONF, verbose=False)[0].obb.xywhr.clone()  # noqa: E731
    validate(yolo, data=task_data("obb"), imgsz=IMGSZ, batch=BATCH, device="cpu", conf=0.9, verbose=False,
             method="gradcam", worst=0, max_images=1)  # the validator fuses the model once
    inner = yolo.model
    params = list(inner.parameters())
    params[0].requires_grad_(False)
    handle = inner.model[4].register_forward_hook(lambda *a: None)
    try:
        before = predict()
        flags = [m.training for m in inner.modules()]
        req = [p.requires_grad for p in params]
        hooks = [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks)) for m in inner.modules()]
        state = {k: v.clone() for k, v in inner.state_dict().items()}
        report = validate(yolo, data=task_data("obb"), imgsz=IMGSZ, batch=BATCH, device="cpu", conf=CONF,
                          verbose=False, method="gradcam", worst=0, max_images=2)
        assert len(report.predictions) > 0 and report.counts["unmatched_predictions"] == 0
        assert [m.training for m in inner.modules()] == flags
        assert [p.requires_grad for p in params] == req and all(p.grad is None for p in params)
        assert [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
                for m in inner.modules()] == hooks
        assert all(torch.equal(v, inner.state_dict()[k]) for k, v in state.items())
        assert torch.equal(before, predict())
    finally:
        handle.remove()
        params[0].requires_grad_(True)


def _cli_args(model, out, data=None):
    return argparse.Namespace(model=str(model), data=None if data is None else str(data), method="gradcam",
                              target="class", layers="neck", fuse="sum", imgsz=IMGSZ, conf=CONF, iou=0.7,
                              device="cpu", out=str(out), max_images=2, max_explanations=None, compare_methods=None,
                              scenes=4)


def test_cli_val_on_a_segmentation_checkpoint(checkpoint, tmp_path, capsys):
    """data=None: the generated scenes with segmentation labels."""
    assert main_val(_cli_args(checkpoint("segment", "v8"), tmp_path / "v")) == 0
    assert (tmp_path / "v" / "metrics.json").is_file()
    assert (tmp_path / "v" / "data" / "segment" / "data.yaml").is_file()
    assert "TP-EiB" in capsys.readouterr().out


def test_cli_val_refuses_classifiers_and_foreign_keypoints(tmp_path, capsys):
    torch.manual_seed(0)
    cls_path = tmp_path / "cls.pt"
    torch.save({"model": ClassificationModel("yolov8n-cls.yaml", nc=3, verbose=False).eval(),
                "train_args": {"task": "classify"}}, cls_path)
    assert main_val(_cli_args(cls_path, tmp_path / "c")) == 2
    err = capsys.readouterr().err.strip()
    assert "classification models is not supported" in err and len(err.splitlines()) == 1
    pose17 = tmp_path / "pose17.pt"
    torch.save({"model": PoseModel("yolov8n-pose.yaml", nc=1, verbose=False).eval(),
                "train_args": {"task": "pose"}}, pose17)
    assert main_val(_cli_args(pose17, tmp_path / "p")) == 2
    err = capsys.readouterr().err.strip()
    assert "kpt_shape" in err and "--data" in err and len(err.splitlines()) == 1


def test_obb_report_files(checkpoint, task_data, tmp_path):
    """predictions.csv carries the rotated boxes; the worst-case gallery draws the rotated ground truth."""
    import csv
    import json

    report = validate(str(checkpoint("obb", "v8")), data=task_data("obb"), imgsz=IMGSZ, batch=BATCH, device="cpu",
                      conf=CONF, method="gradcam", verbose=False, worst=2, max_images=2, out=tmp_path / "o")
    with open(tmp_path / "o" / "predictions.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(report.predictions) > 0 and len(json.loads(rows[0]["rbox"])) == 5
    assert (tmp_path / "o" / "worst" / "index.html").is_file() and report.worst


def test_a_task_config_name_validates_on_the_tasks_generated_scenes(tmp_path):
    """A config name that ultralytics ships (random weights) is built, not looked up as a file."""
    from yolocam.evaluation.validation import validate

    report = validate("yolov8n-seg.yaml", scenes=1, imgsz=64, verbose=False, out=tmp_path / "v")
    assert report.settings["task"] == "segment" and report.settings["model"] == "yolov8n-seg.yaml"
    assert "metrics/mAP50-95(M)" in report.metrics and report.counts["images"] == 1
