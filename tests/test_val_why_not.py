"""Why not in `yolocam val`: missed ground truths, confusions and context reliance, on cases whose answer is known.

`demo-marks` reads the mark on a tile to decide its class. Evidence scenes (320 x 320, validated at imgsz 224: the
scale demo-marks was trained at) are edited while their labels are kept: a tile whose mark was erased is missed
(its map must lie in the tile), a tile given the next class's mark is detected as that class over a ground truth
of its true class, a confusion (its contrast:<true class> map must lie on the mark).
"""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
MARKS = ROOT / "yolocam" / "demo" / "weights" / "demo-marks.pt"
SIZE, IMGSZ = (320, 320), 224
N_SCENES = 6  # even: mark erased on object 0; odd: object 0 given the next class's mark


# ----------------------------------------------------------------------------- by hand
def test_outside_is_the_share_outside_the_box_grown_by_ten_percent_by_hand():
    """Box [5, 5, 15, 15] grown by 10 %: [4.5, 4.5, 15.5, 15.5], pixel centres inside: columns/rows 4..15. Heat 1
    at (10, 10) (in the box), 3 at (4, 4) (outside the box, inside the grown one), 2 at (0, 0) and 5 at (16, 16)
    (outside both): outside = (2 + 5) / 11. The same for the rotated box (10, 10, 10, 10, 0)."""
    from yolocam.evaluation.why_not import context_outside, grown, outside_share

    heat = torch.zeros(20, 20)
    heat[10, 10], heat[4, 4], heat[0, 0], heat[16, 16] = 1.0, 3.0, 2.0, 5.0
    torch.testing.assert_close(grown([5, 5, 15, 15]), torch.tensor([4.5, 4.5, 15.5, 15.5], dtype=torch.float64))
    assert outside_share(heat, [5, 5, 15, 15]) == pytest.approx(7 / 11, abs=1e-7)
    assert outside_share(heat.numpy(), [10, 10, 10, 10, 0.0]) == pytest.approx(7 / 11, abs=1e-7)
    assert outside_share(heat, [5, 5, 15, 15], grow=0.0) == pytest.approx(10 / 11, abs=1e-7)
    negative = heat.clone()
    negative[1, 1] = -4.0  # a signed map: only what raised the score counts
    assert outside_share(negative, [5, 5, 15, 15]) == pytest.approx(7 / 11, abs=1e-7)
    assert outside_share(torch.zeros(20, 20), [5, 5, 15, 15]) is None
    maps = torch.stack([heat, heat])
    assert context_outside(maps, [0, 0], [True, False], torch.tensor([[5.0, 5, 15, 15]])) == \
        [pytest.approx(7 / 11, abs=1e-7), None]  # true positives only


def test_why_not_target_is_the_class_logit_or_the_contrast_by_hand():
    """Anchor 1 logits (0.5, 3.0, 2.0): a missed job (versus -1) of class 1 is 3.0; a confusion job of class 1
    against class 0 is 3.0 - 0.5 = 2.5; jobs without any versus are the class logit."""
    from yolocam.model.adapter import HeadOutputs
    from yolocam.model.detections import Detection
    from yolocam.model.targets import Jobs
    from yolocam.evaluation.why_not import NO_CONTRAST, WhyNotTarget

    logits = torch.tensor([[[0.0, 0.0, 0.0], [0.5, 3.0, 2.0]]]).repeat(2, 1, 1)
    head = HeadOutputs(logits, torch.zeros(2, 2, 4), torch.full((2,), 8.0), torch.zeros(2, 2),
                       torch.zeros(2, dtype=torch.long))
    target = WhyNotTarget()
    dets = [Detection(0, 1, 0, 1, 0.9, (0, 0, 1, 1), versus=NO_CONTRAST), Detection(0, 1, 0, 1, 0.9, (0, 0, 1, 1), versus=0)]
    assert target.prepare(logits, [dets]) == [dets] and target.refusal(dets[0]) is None
    torch.testing.assert_close(target(head, Jobs.build(dets, [0, 0], "cpu")), torch.tensor([3.0, 2.5]))
    plain = [Detection(0, 1, 0, 2, 0.9, (0, 0, 1, 1))] * 2
    torch.testing.assert_close(target(head, Jobs.build(plain, [0, 0], "cpu")), torch.tensor([2.0, 2.0]))


# ----------------------------------------------------------------------------- demo-marks, edited scenes
def _scenes():
    from yolocam.demo.evidence import make_evidence_scene
    from yolocam.demo.scenes import scene_seed

    seeds = [scene_seed(2026, "test", i) for i in range(N_SCENES)]
    edits = [{0: None} if i % 2 == 0 else {0: (int(make_evidence_scene(s, size=SIZE).classes[0]) + 1) % 3}
             for i, s in enumerate(seeds)]
    return seeds, edits


@pytest.fixture(scope="module")
def edited_val(tmp_path_factory):
    from yolocam.demo.why_not_scenes import edited_scene, write_edited_dataset
    from yolocam.evaluation.validation import validate

    seeds, edits = _scenes()
    data = write_edited_dataset(tmp_path_factory.mktemp("edited"), seeds, edits, size=SIZE)
    out = tmp_path_factory.mktemp("edited_val")
    report = validate(str(MARKS), data=str(data), imgsz=IMGSZ, batch=N_SCENES, device="cpu", out=out, verbose=False)
    scenes = [edited_scene(s, e, SIZE) for s, e in zip(seeds, edits)]
    return report, out, scenes


def _of(records, k):
    return [r for r in records if Path(r["image"]).name == f"val_{k:04d}.png"]


def test_a_tile_whose_mark_was_erased_is_a_missed_record_whose_map_lies_in_its_box(edited_val):
    """Measured (12 such scenes): the best-overlapping prediction's IoU 0.98-0.99, its score below 0.001, pointing
    every time, energy in the tile 0.58-0.92."""
    from yolocam.evaluation.metrics import energy_in_box, pointing_game

    report, _, scenes = edited_val
    energies = []
    for k in range(0, N_SCENES, 2):
        (m,) = [m for m in _of(report.missed, k) if m["gt"] == 0]
        original, shown = scenes[k]
        np.testing.assert_allclose(m["box"], original.boxes[0], atol=0.5)
        assert m["cls"] == int(original.classes[0]) and m["iou"] >= 0.9 and m["conf"] < 0.01
        assert m["conf"] == pytest.approx(1 / (1 + np.exp(-m["logit"])), rel=1e-5)
        assert {"anchor", "level", "pred_box"} <= set(m) and "reason" not in m
        heat = m.heatmap  # full size, on access
        assert heat.shape == shown.image.shape[:2] and heat.max() == pytest.approx(1.0)
        np.testing.assert_array_equal(m["heatmap"], heat)
        assert m["pointing"] and pointing_game(heat, m["box"])
        assert m["energy"] == pytest.approx(energy_in_box(heat, m["box"]), abs=0.02)  # on the crop / full size
        energies.append(m["energy"])
    assert min(energies) >= 0.5, energies


def test_a_swapped_mark_is_a_confusion_whose_contrast_map_lies_on_the_mark(edited_val):
    """Measured (6 such scenes): the tile detected as the new class at 0.84-0.99 over its true box (IoU >= 0.97),
    the contrast map's peak on the mark (evidence pointing, mark disc grown 1.5x) 6 of 6, energy in the box
    0.86-0.95; the true class's ground truth is then missed too."""
    from yolocam.evaluation.evidence import evidence_pointing

    report, _, scenes = edited_val
    hits = []
    for k in range(1, N_SCENES, 2):
        original, shown = scenes[k]
        (rec,) = [r for r in _of(report.predictions, k) if r.get("confused_gt") == 0]
        true = int(original.classes[0])
        assert not rec["tp"] and rec["cls"] == (true + 1) % 3 and rec["confused_cls"] == true
        assert rec["confused_with"] == report.settings.get("data_names", {}).get(true, rec["confused_with"])
        assert rec["confused_iou"] >= 0.5 and rec["contrast_pointing"] and rec["contrast_energy"] >= 0.6
        heat = rec.contrast_heatmap
        assert heat.shape == shown.image.shape[:2]
        hits.append(evidence_pointing(heat, (*shown.mark_centres[0].tolist(), float(shown.mark_diameters[0]))))
        assert any(m["gt"] == 0 for m in _of(report.missed, k))
    assert sum(hits) >= len(hits) - 1, hits


def test_the_report_counts_them_and_writes_them(edited_val):
    from yolocam.evaluation.report import TABLE_COLUMNS
    from yolocam.evaluation.why_not import load_missed_maps

    report, out, _ = edited_val
    rows = {r["class"]: r for r in report.table}
    assert rows["all"]["missed"] == len(report.missed) >= N_SCENES
    assert sum(rows[c]["missed"] for c in rows if c != "all") == len(report.missed)
    confused = [p for p in report.predictions if p.get("confused_with")]
    assert rows["all"]["confused"] == len(confused) >= N_SCENES // 2
    assert sum(c["count"] for c in report.confusions) == len(confused)
    for c in report.confusions:
        mine = [p for p in confused if p["cls"] == c["predicted_cls"] and p["confused_cls"] == c["true_cls"]]
        assert c["count"] == len(mine) and c["energy"] == pytest.approx(np.mean([p["contrast_energy"] for p in mine]))
    tps = [p["outside"] for p in report.predictions if p["tp"]]
    assert tps and all(v is not None and 0 <= v <= 1 for v in tps)
    assert rows["all"]["tp_outside"] == pytest.approx(np.mean(tps))
    assert all(p["outside"] is None for p in report.predictions if not p["tp"])
    # files: metrics.json (missed records, confusions, table), predictions.csv (confused_with), missed.npz
    data = json.loads((out / "metrics.json").read_text())
    assert len(data["missed"]) == len(report.missed) and data["missed"][0]["iou"] == report.missed[0]["iou"]
    assert "heatmap" not in data["missed"][0] and len(data["confusions"]) == len(report.confusions)
    assert tuple(data["table"][0]) == TABLE_COLUMNS
    with open(out / "predictions.csv") as fh:
        rows_csv = list(csv.DictReader(fh))
    assert sum(bool(r["confused_with"]) for r in rows_csv) == len(confused)
    with np.load(out / "missed.npz") as npz:
        assert npz["heatmaps"].dtype == np.float16 and len(npz["heatmaps"]) == len(report.missed)
        assert npz["index"].tolist() == list(range(len(report.missed)))
        assert npz["image_size"].tolist() == [list(SIZE)] * len(report.missed)
        assert max(npz["map_size"][0]) <= IMGSZ  # over the letterbox content, not the original
    for m, full in zip(report.missed, load_missed_maps(out / "missed.npz")):
        np.testing.assert_allclose(full, m.heatmap, atol=2e-3)
    text = report.format()
    assert "TP-Out" in text and "Miss-EiB" in text and " -> " in text
    html = (out / "worst" / "index.html").read_text()
    for kind in ("missed", "confusion", "context"):
        assert f'data-kind="{kind}"' in html
    cases = json.loads((out / "worst" / "cases.json").read_text())
    assert sum(c["kind"] == "missed" for c in cases) == min(12, len(report.missed))
    assert sum(c["kind"] == "confusion" for c in cases) == min(12, len(confused))


# ----------------------------------------------------------------------------- context reliance
CONTEXT = ROOT / "yolocam" / "demo" / "weights" / "demo-context.pt"
CONTEXT_MARGIN = 0.2  # measured: 0.62 (12 true positives) against 0.23 (11)


def test_a_detector_that_reads_a_tag_beside_the_tile_relies_on_context_more_than_demo_v8(tmp_path):
    """demo-context finds tiles whose class is set by a tag mark left of them, outside the box
    (`demo.why_not_scenes.make_context_scene`); demo-v8 finds shapes by their outline. The mean share of the
    true positives' heat outside their box grown by 10 % (`tp_outside`) must be higher for demo-context.
    Measured here (6 held-out context scenes at imgsz 160 / 4 shape scenes at 352): 0.62 against 0.23; on 24
    context scenes 0.61 (the map's peak on the tag for 43 of 48 true positives), on val's 32 shape scenes 0.22."""
    from yolocam.demo.why_not_scenes import write_context_dataset
    from yolocam.evaluation.validation import default_dataset, validate

    kw = dict(device="cpu", verbose=False, worst=0)
    ctx = validate(str(CONTEXT), data=str(write_context_dataset(tmp_path / "ctx", 0, 6, seed=2026)), imgsz=160,
                   batch=6, **kw)
    v8 = validate("demo-v8", data=str(default_dataset(tmp_path / "shapes", scenes=4, seed=11)), imgsz=352, batch=4, **kw)
    ctx_all, v8_all = ctx.table[-1], v8.table[-1]
    assert ctx_all["tp"] >= 6 and v8_all["tp"] >= 8
    assert ctx_all["tp_outside"] > v8_all["tp_outside"] + CONTEXT_MARGIN, (ctx_all["tp_outside"], v8_all["tp_outside"])
