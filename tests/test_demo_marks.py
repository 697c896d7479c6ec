"""The `demo-marks` detector (evidence scenes): it finds the marked tiles, and it decides by the mark.

Skipped if `yolocam/demo/weights/demo-marks.pt` is missing (how it is trained: `weights_scripts/README.md`).
Held-out mAP50 (500 scenes) and the erase/swap ablation over 100 scenes are measured by
`weights_scripts/evaluate_marks.py`; here the same checks run on 12 other held-out scenes.
"""

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "yolocam" / "demo" / "weights" / "demo-marks.pt"
IMGSZ = 416  # the size demo-marks was trained at
N_SCENES = 12

pytestmark = pytest.mark.skipif(not WEIGHTS.is_file(), reason="demo-marks weights missing (weights_scripts/README.md)")


@pytest.fixture(scope="module")
def model():
    import yolocam  # noqa: F401  (offline switches before ultralytics)
    from ultralytics import YOLO

    return YOLO(str(WEIGHTS), task="detect")


@pytest.fixture(scope="module")
def evaluate_marks():
    sys.path.insert(0, str(ROOT / "weights_scripts"))
    import evaluate_marks

    return evaluate_marks


def seeds():
    from yolocam.demo.scenes import scene_seed

    return [scene_seed(2025, "test", i) for i in range(N_SCENES)]


def test_finds_the_marked_tiles_and_not_the_distractors(model):
    from yolocam.demo.evidence import EVIDENCE_CLASSES, make_evidence_scene
    from yolocam.evaluation.metrics import match_ground_truth

    assert [model.names[i] for i in range(3)] == list(EVIDENCE_CLASSES)
    found = total = predicted = 0
    for seed in seeds():
        s = make_evidence_scene(seed)
        r = model.predict(s.image, imgsz=IMGSZ, conf=0.25, verbose=False)[0]
        matched = match_ground_truth(r.boxes.xyxy.cpu(), r.boxes.cls.cpu().long(), s.boxes, s.classes)
        found += int((matched >= 0).sum())
        predicted += len(r.boxes)
        total += len(s.boxes)
    # measured: 32 of 32 tiles found, 32 predictions (recall = precision = 1.0)
    assert found / total >= 0.9 and found / max(predicted, 1) >= 0.9, (found, total, predicted)


def test_decides_by_the_mark(model, evaluate_marks):
    r = evaluate_marks.ablation(model, seeds(), imgsz=IMGSZ, conf=0.25)  # measured: erase 32/32, swap 64/64
    assert r["detected"] >= 0.8 * r["objects"], r
    assert r["erase"] >= 0.9, r  # erasing the mark removes the detection
    assert r["swap"] >= 0.9, r  # another class's mark changes the class
    assert np.isfinite(r["erase"]) and np.isfinite(r["swap"])


def _evidence_scores(explainer_kw, n_scenes=N_SCENES):
    """Per true positive of the held-out scenes: (evidence pointing, evidence share, Gaussian's share)."""
    import yolocam
    from yolocam.demo.evidence import make_evidence_scene
    from yolocam.evaluation.metrics import evidence_scores, gaussian_box_map, match_ground_truth

    scenes = [make_evidence_scene(seed) for seed in seeds()[:n_scenes]]
    exp = yolocam.Explainer(str(WEIGHTS), imgsz=IMGSZ, **explainer_kw)
    maps, boxes, discs, gauss = [], [], [], []
    for s, res in zip(scenes, exp.explain([s.image for s in scenes], conf=0.25)):
        dets = res.detections
        matched = match_ground_truth([d.box for d in dets], [d.cls for d in dets], s.boxes, s.classes)
        for d, g in zip(dets, matched.tolist()):
            if g >= 0:
                disc = (*s.mark_centres[g].tolist(), float(s.mark_diameters[g]))
                maps.append(d.heatmap), boxes.append(d.box), discs.append(disc)
                gauss.append(gaussian_box_map(s.image.shape[:2], d.box).numpy())
    pointing, share = evidence_scores(np.stack(maps), np.stack(boxes), discs)
    _, gauss_share = evidence_scores(np.stack(gauss), np.stack(boxes), discs)
    return pointing, share, gauss_share


def test_the_default_explanation_points_at_the_mark():
    """The issue's goal on held-out scenes: evidence pointing >= 0.8 and evidence share >= 2x a box-centred
    Gaussian's. The earlier default (hirescam on the neck, summed) lands next to the mark, not on it.
    Measured here (12 scenes, 32 true positives): default 0.84 / 3.4x; hirescam-neck-sum 0.22 / 1.3x."""
    pointing, share, gauss_share = _evidence_scores({})
    assert len(pointing) >= 25
    assert float(pointing.mean()) >= 0.8
    assert float(share.mean()) >= 2.0 * float(gauss_share.mean())
    old, old_share, _ = _evidence_scores({"method": "hirescam", "layers": "neck", "fuse": "sum"})
    assert float(old.mean()) < 0.5 and float(old_share.mean()) < float(share.mean())


def test_compare_methods_measures_evidence_like_the_explainer():
    """`compare_methods(evidence=True)` scores maps in the letterboxed input; the same detections explained
    through `Explainer` and scored in image pixels (the helper above, seeds 2025) must tell the same story."""
    from yolocam.demo.scenes import scene_seed
    from yolocam.evaluation.compare import compare_methods, format_comparison

    from yolocam.defaults import DEFAULT_METHOD

    rows = compare_methods(str(WEIGHTS), scenes=4, imgsz=IMGSZ, methods=[DEFAULT_METHOD, "gradcam"], steps=2,
                           faithful=0, seed=2025, evidence=True)
    assert [r["method"] for r in rows] == [DEFAULT_METHOD, "gradcam"] and rows[0]["tp"] >= 8
    assert "EvPG" in format_comparison(rows)
    default, pooled = rows
    assert seeds()[:4] == [scene_seed(2025, "test", i) for i in range(4)]
    pointing, share, gauss_share = _evidence_scores({}, n_scenes=4)
    assert len(pointing) == default["tp"]
    assert abs(default["evidence_pointing"] - float(pointing.mean())) <= 0.15
    assert abs(default["evidence_x_gauss"] - float(share.mean() / gauss_share.mean())) <= 0.4
    assert default["evidence_x_gauss"] >= 2.0 and pooled["evidence_pointing"] < default["evidence_pointing"]


def test_demo_marks_by_name_and_in_the_demo_command(tmp_path, capsys):
    """`demo-marks` is a bundled name; `yolocam demo --model demo-marks` shows it an evidence scene."""
    import json

    import yolocam
    from yolocam.cli.main import main
    from yolocam.demo.evidence import make_evidence_scene

    assert "demo-marks" in yolocam.list_models()
    exp = yolocam.Explainer("demo-marks")
    assert exp.imgsz == IMGSZ and [exp.names[i] for i in range(3)] == ["dot", "ring", "plus"]
    assert main(["demo", "--model", "demo-marks", "--seed", "10", "--out", str(tmp_path / "d")]) == 0
    out = capsys.readouterr().out
    scene = make_evidence_scene(10)
    assert f"scene 10 ({len(scene.boxes)} objects)" in out
    manifest = json.loads((tmp_path / "d" / "manifest.json").read_text())
    names = sorted(d["name"] for d in manifest["images"][0]["detections"])
    assert names == sorted(["dot", "ring", "plus"][c] for c in scene.classes.tolist())
