"""D-RISE inside validation and the method comparison (the same detections as the gradient methods)."""

import pytest

from yolocam.evaluation.compare import COLUMNS, compare_methods
from yolocam.evaluation.validation import default_dataset, validate


def test_validate_with_drise(tmp_path):
    data = default_dataset(tmp_path / "data", scenes=4, seed=5)
    report = validate(data=data, method="drise", imgsz=160, batch=4, device="cpu", max_images=2,
                      max_explanations=3, verbose=False, worst=0, out=tmp_path / "out",
                      drise={"masks": 16, "mask_batch": 16})
    assert report.counts["images_explained"] <= 2 and 0 < len(report.predictions) <= 3


def test_compare_methods_with_drise():
    rows = compare_methods(scenes=1, imgsz=160, methods=["hirescam", "drise"], steps=4, faithful=1,
                           drise={"masks": 32, "batch": 32})
    assert [r["method"] for r in rows] == ["hirescam", "drise"]
    for r in rows:
        assert set(r) == set(COLUMNS) and r["detections"] > 0
        assert 0.0 <= r["pointing"] <= 1.0 and 0.0 <= r["deletion_auc"] <= 1.5
    with pytest.raises(Exception, match="drise masks"):
        compare_methods(scenes=1, imgsz=160, methods=["drise"], drise={"masks": 0})
