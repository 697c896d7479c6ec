"""`--exact` / `validate(exact=True)`: the exact replay asked for from the CLI and validation reaches the
engine (on a CPU the default replays boxes on truncated windows)."""

import types

import pytest

import yolocam
from yolocam.cli.main import build_parser
from yolocam.cli.options import explainer_from_args
from yolocam.evaluation import validation


@pytest.mark.parametrize("flag", [[], ["--exact"]])
def test_explain_exact_flag_reaches_the_engine(flag):
    args = build_parser().parse_args(["explain", "x.png", "--model", "demo-v8", "--imgsz", "96", *flag])
    exp, _ = explainer_from_args(args)
    assert exp.runner.exact is bool(flag)
    assert (exp.runner.truncate is None) is bool(flag)  # the exact replay never truncates


def test_val_exact_flag_is_parsed():
    assert build_parser().parse_args(["val", "--exact"]).exact is True
    assert build_parser().parse_args(["val"]).exact is False


def test_validate_builds_its_explainers_exact(monkeypatch):
    seen = []

    class Stop(Exception):
        pass

    def recording(*a, **k):
        seen.append(k.get("exact"))
        raise Stop

    monkeypatch.setattr(validation, "Explainer", recording)
    with pytest.raises(Stop):
        validation.validate("demo-v8", scenes=1, imgsz=64, exact=True, verbose=False)
    assert seen == [True]


def test_exact_maps_equal_the_exact_explainer(tmp_path):
    import cv2
    import numpy as np

    from yolocam.cli import main
    from yolocam.demo.scenes import make_scene

    cv2.imwrite(str(tmp_path / "a.png"), make_scene(3, size=(160, 160)).image)
    assert main(["explain", str(tmp_path / "a.png"), "--exact", "--imgsz", "160", "--out", str(tmp_path / "o")]) == 0
    (back,) = yolocam.load_output(tmp_path / "o")
    [ref] = yolocam.Explainer("demo-v8", imgsz=160, exact=True).explain(str(tmp_path / "a.png"))
    assert len(back.detections) == len(ref.detections) > 0
    for b, r in zip(back.detections, ref.detections):
        np.testing.assert_allclose(b.heatmap, r.heatmap, atol=2e-3)  # float16 in the npz
