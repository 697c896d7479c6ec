"""yolocam.validate: ultralytics' own validator, explained (on the demo detector and generated scenes)."""

import argparse
import csv
import json
from pathlib import Path
from unittest import mock

import cv2
import numpy as np
import pytest
import torch
from ultralytics import YOLO
from ultralytics.utils.metrics import DetMetrics

from conftest import nms_without_time_limit
from yolocam.evaluation.compare import COLUMNS, compare_methods
from yolocam.evaluation.report import GT_LEGEND, TABLE_COLUMNS
from yolocam.evaluation.metrics import energy_in_box
from yolocam.demo.models import demo_model_path
from yolocam.evaluation.validation import Collector, default_dataset, main_val, validate

IMGSZ = 352  # the demo detector's training size
BATCH = 4


@pytest.fixture(scope="session")
def val_data(tmp_path_factory):
    return default_dataset(tmp_path_factory.mktemp("valdata"), scenes=12, seed=11)


@pytest.fixture(scope="session")
def val_run(val_data, tmp_path_factory):
    """One explained validation run, recording what ultralytics' metrics received and the grad mode."""
    out = tmp_path_factory.mktemp("valout")
    stats, modes = [], []
    update_stats, add_batch = DetMetrics.update_stats, Collector.add_batch

    def spy_stats(self, stat):
        stats.append({k: np.array(v, copy=True) if isinstance(v, np.ndarray) else v for k, v in stat.items()})
        return update_stats(self, stat)

    def spy_batch(self, img, pending):
        modes.append((torch.is_inference_mode_enabled(), img.is_inference()))
        return add_batch(self, img, pending)

    with mock.patch.object(DetMetrics, "update_stats", spy_stats), mock.patch.object(Collector, "add_batch", spy_batch), \
            nms_without_time_limit():  # compared with a plain val below: not with what a loaded machine drops
        report = validate(data=val_data, imgsz=IMGSZ, batch=BATCH, device="cpu", out=out, verbose=False)
    return report, stats, modes, out


def test_metrics_equal_plain_val(val_run, val_data):
    report = val_run[0]
    with nms_without_time_limit():
        plain = YOLO(str(demo_model_path()), task="detect").val(data=str(val_data), imgsz=IMGSZ, batch=BATCH,
                                                                 device="cpu", plots=False, verbose=False)
    assert report.metrics == {k: float(v) for k, v in plain.results_dict.items()}
    assert report.metrics["metrics/mAP50(B)"] > 0.3  # the demo detector finds the shapes


def test_tp_fp_labels_agree_with_ultralytics_matching(val_run):
    report, stats, _, _ = val_run
    assert report.counts["unmatched_predictions"] == 0
    assert report.counts["label_mismatches"] == 0
    by_image = {}
    for rec in report.predictions:
        by_image.setdefault(Path(rec["image"]).name, []).append(rec)
    assert len(stats) == report.counts["images"] == 12
    checked = 0
    for stat in stats:
        recs = sorted(by_image.get(stat["im_name"], []), key=lambda r: r["index"])
        kept = int((stat["conf"] >= 0.25).sum())
        assert len(recs) == kept  # every prediction the validator keeps at conf >= 0.25 is explained
        for rec in recs:
            k = rec["index"]
            assert rec["tp"] == bool(stat["tp"][k, 0])  # ultralytics' own tp matrix at IoU 0.5
            assert rec["conf"] == pytest.approx(float(stat["conf"][k]), abs=1e-6)
            assert rec["cls"] == int(stat["pred_cls"][k])
            checked += 1
    tps = sum(r["tp"] for r in report.predictions)
    assert checked == len(report.predictions) and tps > 0


def test_explanations_computed_inside_inference_mode(val_run):
    report, _, modes, _ = val_run
    assert modes and all(inference and tensor for inference, tensor in modes)  # really inside inference mode
    energies = [r["energy"] for r in report.predictions if r["energy"] is not None]
    assert len(energies) == len(report.predictions) and max(energies) > 0.1


def test_true_positives_beat_uniform_noise(val_run):
    report = val_run[0]
    rng = np.random.default_rng(0)
    tp = [r for r in report.predictions if r["tp"]]
    assert len(tp) >= 10
    noise = []
    for r in tp:
        h, w = cv2.imread(r["image"]).shape[:2]
        noise.append(energy_in_box(rng.random((h, w), dtype=np.float32), r["gt_box"]))
    ours = np.mean([r["energy"] for r in tp])
    # margin: at least 0.15 more of the map inside the matched box than noise (which puts ~the area share there)
    assert ours > np.mean(noise) + 0.15, (ours, np.mean(noise))


def test_table_counts_and_files(val_run):
    report, _, _, out = val_run
    rows = {r["class"]: r for r in report.table}
    assert set(rows) == {"circle", "square", "triangle", "cross", "all"}
    everything = rows["all"]
    assert everything["explained"] == len(report.predictions) == everything["tp"] + everything["fp"]
    # with no cap, every ground truth is either matched by an explained TP or listed as missed
    assert everything["tp"] + everything["missed"] == everything["instances"] == len(report.missed) + everything["tp"]
    assert sum(rows[c]["instances"] for c in ("circle", "square", "triangle", "cross")) == everything["instances"]
    with open(out / "metrics.csv") as fh:
        table = list(csv.DictReader(fh))
    assert tuple(table[0]) == TABLE_COLUMNS and [r["class"] for r in table] == [r["class"] for r in report.table]
    with open(out / "predictions.csv") as fh:
        assert len(list(csv.DictReader(fh))) == len(report.predictions)
    data = json.loads((out / "metrics.json").read_text())
    assert data["metrics"] == report.metrics and len(data["missed"]) == len(report.missed)
    assert (out / "worst" / "index.html").is_file()
    manifest = json.loads((out / "worst" / "manifest.json").read_text())
    assert len(manifest["images"]) == len(report.worst) > 0
    fps = [c for c in report.worst if c["kind"] == "false_positive"]
    assert [c["conf"] for c in fps] == sorted((c["conf"] for c in fps), reverse=True)
    cases = [d["case"] for img in manifest["images"] for d in img["detections"]]  # each card says what it is
    assert sum(c.startswith("false positive #") for c in cases) == len(fps)
    assert sum(c.startswith("true positive #") for c in cases) == sum(c["kind"] == "true_positive" for c in report.worst)
    for kind, words in (("missed", "missed #"), ("confusion", "confusion #"), ("context", "context #")):  # why not
        assert sum(c.startswith(words) for c in cases) == sum(c["kind"] == kind for c in report.worst)
    html_text = (out / "worst" / "index.html").read_text()
    assert html_text.count('class="case"') == len(report.worst)
    # each case's card is its box zoomed with context (the ground truth in black and white), as in the explain
    # gallery, the full image a click away
    crops = [d["crop"] for img in manifest["images"] for d in img["detections"]]
    assert len(crops) == len(report.worst) and all((out / "worst" / c).is_file() for c in crops)
    assert all("black and white" in c for c in cases) and html_text.count("crops/") >= len(crops)
    # each section's heading says which box is the prediction and which the ground truth; levels named by stride
    assert html_text.count(GT_LEGEND) == len({c["kind"] for c in report.worst})
    assert manifest["strides"] == [8, 16, 32] and "P3 (stride 8)" in html_text and "head level" not in html_text
    text = report.format()
    assert "mAP50-95)" in text and "TP-EiB" in text


def test_caps_on_images_and_explanations(val_data):
    report = validate(data=val_data, imgsz=IMGSZ, batch=BATCH, device="cpu", max_images=2, max_explanations=3,
                      verbose=False, worst=0)
    assert report.counts["images"] == 12  # the validator still sees everything
    assert report.counts["images_explained"] <= 2 and 0 < len(report.predictions) <= 3


def test_main_val_writes_results_and_rejects_bad_input(val_data, tmp_path, capsys):
    args = argparse.Namespace(model=None, data=str(val_data), method="gradcam", target="class", layers="neck",
                              fuse="sum", imgsz=IMGSZ, conf=0.5, iou=0.7, device="cpu", out=str(tmp_path / "v"),
                              max_images=2, max_explanations=None, compare_methods=None, scenes=None)
    assert main_val(args) == 0
    assert (tmp_path / "v" / "metrics.json").is_file()
    assert "TP-EiB" in capsys.readouterr().out
    args.data = str(tmp_path / "missing.yaml")
    assert main_val(args) == 2
    assert "missing.yaml" in capsys.readouterr().err


def test_compare_methods_table(tmp_path, capsys):
    rows = compare_methods(scenes=2, imgsz=192, methods=["gradcam", "ssgradcam++", "odam"], steps=4, faithful=1)
    assert [r["method"] for r in rows] == ["gradcam", "ssgradcam++", "odam"]
    for r in rows:
        assert set(r) == set(COLUMNS) and r["detections"] > 0
        for key in ("pointing", "energy", "energy_other", "deletion_auc", "insertion_auc"):
            assert 0.0 <= r[key] <= 1.5, (r["method"], key, r[key])
        assert -1.0 <= r["randomisation"] <= 1.0 and -1.0 <= r["randomisation_box"] <= 1.0
    args = argparse.Namespace(model=None, data=None, method=None, target="class", layers="neck", fuse="sum",
                              imgsz=160, conf=0.25, iou=0.7, device="cpu", out=str(tmp_path / "cmp"),
                              max_images=None, max_explanations=None, compare_methods=["gradcam", "eigencam"],
                              scenes=1)
    assert main_val(args) == 0
    printed = capsys.readouterr().out
    assert "gradcam" in printed and "eigencam" in printed and "Rand-rho" in printed
    saved = json.loads((tmp_path / "cmp" / "compare_methods.json").read_text())
    assert [r["method"] for r in saved] == ["gradcam", "eigencam"]
