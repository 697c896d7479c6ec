"""D-RISE inside validation and the method comparison (the same detections as the gradient methods)."""

import pytest

from yolocam.errors import YolocamError
from yolocam.evaluation.compare import COLUMNS, compare_methods
from yolocam.evaluation.validation import default_dataset, validate


def test_validate_with_drise(tmp_path):
    data = default_dataset(tmp_path / "data", scenes=4, seed=5)
    report = validate(data=data, method="drise", imgsz=160, batch=4, device="cpu", max_images=2,
                      max_explanations=3, verbose=False, worst=0, out=tmp_path / "out",
                      drise={"masks": 16, "mask_batch": 16})
    assert 1 <= report.counts["images_explained"] <= 2
    assert report.counts["explanations"] == len(report.predictions) == 3  # max_explanations
    assert report.counts["unmatched_predictions"] == 0
    assert all(r["pointing"] in (0.0, 1.0) and 0.0 < r["energy"] <= 1.0 for r in report.predictions)
    tps = [r for r in report.predictions if r["tp"]]
    # measured: the one true positive among the 3 (conf 0.96) has its peak in its box, energy 0.25
    assert tps and sum(r["pointing"] for r in tps) / len(tps) >= 0.5, tps


def test_compare_methods_with_drise():
    rows = compare_methods(scenes=1, imgsz=160, methods=["hirescam", "drise"], steps=4, faithful=1,
                           drise={"masks": 32, "batch": 32})
    assert [r["method"] for r in rows] == ["hirescam", "drise"]
    for r in rows:
        assert set(r) == set(COLUMNS) and r["detections"] > 0 and r["tp"] > 0
        assert 0.0 <= r["pointing"] <= 1.0 and 0.0 <= r["deletion_auc"] <= 1.0 and 0.0 <= r["insertion_auc"] <= 1.0
    assert rows[0]["detections"] == rows[1]["detections"] and rows[0]["tp"] == rows[1]["tp"]  # the same boxes
    drise = rows[1]
    # measured (seeded masks, 4 true positives): pointing 1.0, deletion AUC 0.15 against insertion 0.57
    assert drise["pointing"] >= 0.75, drise
    assert drise["deletion_auc"] < drise["insertion_auc"] - 0.2, drise
    with pytest.raises(YolocamError, match="drise masks: expected"):
        compare_methods(scenes=1, imgsz=160, methods=["drise"], drise={"masks": 0})
