"""Figures (matplotlib): the validation report's plots and the training chart are real PNGs with content."""

from __future__ import annotations

import cv2
import numpy as np

from yolocam.evaluation.plots import energy_vs_conf_png, per_class_png, tp_fp_png, training_png
from yolocam.evaluation.report import TABLE_COLUMNS, ValidationReport, class_table


def decode(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape[0] > 200 and image.shape[1] > 300
    assert image.std() > 10  # drawn, not blank
    return image


def synthetic(n: int = 60, seed: int = 0):
    rng = np.random.default_rng(seed)
    names = {0: "circle", 1: "square", 2: "triangle"}
    preds = []
    for k in range(n):
        tp = bool(rng.random() < 0.7)
        energy = float(np.clip(rng.normal(0.7 if tp else 0.2, 0.15), 0, 1)) if k % 9 else float("nan")
        preds.append({"image": f"im{k // 5}", "index": k % 5, "cls": int(rng.integers(0, 3)), "name": "x",
                      "conf": float(rng.uniform(0.25, 1.0)), "box": [0, 0, 1, 1], "tp": tp, "gt": 0,
                      "gt_box": [0, 0, 1, 1], "pointing": float(rng.random() < (0.9 if tp else 0.3)),
                      "energy": energy, "energy_other": float(rng.random() * 0.2), "anchor": k, "level": 0})
    table = class_table(preds, [{"cls": 1}], names, {0: 20, 1: 20, 2: 20})
    return table, preds


def test_report_plots_are_pictures():
    table, preds = synthetic()
    decode(per_class_png(table))
    decode(energy_vs_conf_png(preds))
    decode(tp_fp_png(preds))
    decode(tp_fp_png([p for p in preds if p["tp"]]))  # no false positives at all still draws


def test_report_save_writes_the_plots(tmp_path):
    table, preds = synthetic()
    settings = {"model": "m.pt", "method": "hirescam", "target": "class", "layers": "neck", "fuse": "sum", "conf": 0.25}
    report = ValidationReport({}, [], table, preds, [], settings, {"images": 12})
    report.save(tmp_path)
    for name in ("per_class.png", "energy_vs_conf.png", "tp_vs_fp.png", "metrics.csv"):
        assert (tmp_path / name).is_file(), name
    decode((tmp_path / "per_class.png").read_bytes())
    assert tuple(table[0]) == TABLE_COLUMNS


def test_training_chart_handles_missing_values():
    rows = [{"epoch": e, "images": 4, "detections": 3, "tp": 2, "fp": 1, "missed": 1, "tp_pointing": 0.5 + 0.1 * e,
             "tp_energy": 0.4, "tp_energy_other": 0.1, "fp_energy": float("nan"), "deletion_auc": 0.2,
             "insertion_auc": float("nan") if e == 1 else 0.8} for e in (1, 2, 3)]
    decode(training_png(rows))
    decode(training_png(rows[:1]))
