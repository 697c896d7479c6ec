"""Stability metrics (`yolocam.evaluation.stability`): hand-built cases, the frame mappings, and the
bundled default's JPEG-90 stability on generated scenes."""

import math

import numpy as np
import pytest
import torch

from yolocam.errors import YolocamError
from yolocam.evaluation import stability as S

H, W = 72, 96
BOX = (20.0, 16.0, 70.0, 56.0)


def smooth_field(seed: int, shape=(H, W)) -> torch.Tensor:
    """A smooth random map in [0, 1] (noise blurred by a 9 x 9 box filter)."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.rand((1, 1, shape[0] + 8, shape[1] + 8), generator=g)
    field = torch.nn.functional.avg_pool2d(noise, 9, stride=1)[0, 0]
    return (field - field.min()) / (field.max() - field.min())


def bump(cx: float, cy: float, sigma: float = 4.0, shape=(H, W)) -> torch.Tensor:
    ys = torch.arange(shape[0], dtype=torch.float32)[:, None] + 0.5
    xs = torch.arange(shape[1], dtype=torch.float32)[None, :] + 0.5
    return torch.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma * sigma))


@pytest.mark.parametrize("dx, dy", [(1, 0), (2, 1), (4, 4), (5, 0), (7, 3), (-3, 2), (0, -6)])
def test_exactly_shifted_map_scores_one(dx, dy):
    a = smooth_field(0) * 0.5 + bump(44, 35)  # a clear peak inside the box
    shifted = torch.from_numpy(S.shift_image(a.numpy(), dx, dy))  # the map of the shifted image, exactly
    back, valid = S.unshift_map(shifted, dx, dy)
    assert S.map_correlation(a, back, BOX, valid=valid) == pytest.approx(1.0, abs=1e-9)
    region = S.grown_region((H, W), BOX) & valid
    assert S.peak_kept(a, back, region=region)
    assert S.peak_position(back, region) == S.peak_position(a, region)
    # without undoing the shift the same maps correlate less and (for the larger shifts) lose the peak
    assert S.map_correlation(a, shifted, BOX) < 0.999


def test_unrelated_maps_score_near_zero_and_lose_the_peak():
    g = torch.Generator().manual_seed(1)
    a, b = torch.rand((H, W), generator=g), torch.rand((H, W), generator=g)  # independent noise fields
    assert abs(S.map_correlation(a, b, BOX)) < 0.1  # about 2500 pixels: |r| ~ 0.02
    assert abs(S.map_correlation(smooth_field(2), smooth_field(3), BOX)) < 0.35  # smooth: fewer independent cells
    here, there = bump(30, 25), bump(60, 45)  # one peak each, 36 px apart
    assert not S.peak_kept(here, there)
    assert S.map_correlation(here, there, BOX) < 0.1
    assert S.peak_kept(here, bump(35, 30))  # 7 px away: kept at tol 8
    assert not S.peak_kept(here, bump(36, 31))  # 8.5 px away
    assert not S.peak_kept(here, torch.zeros(H, W))  # an all-zero map has no peak
    assert S.map_correlation(here, torch.zeros(H, W), BOX) == 0.0  # constant: no correlation


@pytest.mark.parametrize("dx, dy", [(2, 1), (-5, 3), (7, -7), (0, 0)])
def test_unshift_of_shift_is_identity_on_the_kept_region(dx, dy):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    shifted = S.shift_image(image, dx, dy)
    assert shifted.shape == image.shape and shifted.dtype == image.dtype
    back, valid = S.unshift_map(torch.from_numpy(shifted).permute(2, 0, 1), dx, dy)
    assert int(valid.sum()) == (H - abs(dy)) * (W - abs(dx))
    original = torch.from_numpy(image).permute(2, 0, 1)
    assert torch.equal(back[:, valid], original[:, valid])
    assert (back[:, ~valid] == 0).all()
    # the side the content left is filled with the edge pixels
    if dx > 0:
        assert np.array_equal(shifted[max(dy, 0):H + min(dy, 0), 0], image[max(-dy, 0):H - max(dy, 0), 0])


def test_shift_moves_the_boxes_back():
    p = S.parse_perturbation("shift4_-2")
    assert (p.a, p.b, p.name) == (4, -2, "shift4_-2")
    back = S.boxes_back([[14.0, 8.0, 54.0, 38.0]], p, (H, W), (H, W))
    assert back.tolist() == [[10.0, 10.0, 50.0, 40.0]]


@pytest.mark.parametrize("factor", [0.95, 1.05, 0.5])
def test_resize_mapping_round_trips_a_box_and_a_map(factor):
    box = torch.tensor([[12.0, 9.0, 61.0, 50.0]])
    small = (round(H * factor), round(W * factor))
    there = S.resize_boxes(box, (H, W), small)
    assert torch.allclose(S.resize_boxes(there, small, (H, W)), box, atol=1e-4)
    # a drawn rectangle found on the resized image maps back onto the drawn one (within a pixel)
    image = np.zeros((H, W, 3), np.uint8)
    image[9:50, 12:61] = 255
    resized = S.resize_image(image, factor)
    assert resized.shape[:2] == small
    ys, xs = np.nonzero(resized[..., 0] > 127)
    found = [[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]]
    back = S.boxes_back(found, f"resize{factor}", small, (H, W))
    assert torch.allclose(back, box, atol=1.5)
    # a smooth map of the resized image, mapped back, is the original map
    heat = bump(40, 30, sigma=8)
    heat_there = torch.from_numpy(S.resize_image(heat.numpy(), factor))
    heat_back, valid = S.map_back(heat_there, f"resize{factor}", (H, W))
    assert heat_back.shape == (H, W) and valid.all()
    assert S.map_correlation(heat, heat_back, box[0]) > 0.99
    assert S.peak_kept(heat, heat_back, tol=1.5)


def test_perturbations_are_named_deterministic_and_small():
    names = [S.parse_perturbation(n).name for n in S.DEFAULT_PERTURBATIONS]
    assert names == list(S.DEFAULT_PERTURBATIONS)
    assert S.parse_perturbation("shift5").name == "shift5_0"
    rng = np.random.default_rng(3)
    image = cv2_blur(rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
    for name in ("jpeg90", "jpeg75", "noise2"):
        out = S.perturb(image, name)
        assert out.shape == image.shape and out.dtype == np.uint8
        diff = np.abs(out.astype(int) - image.astype(int))
        assert 0 < diff.mean() < 8, name
    assert np.array_equal(S.perturb(image, "noise2"), S.perturb(image, "noise2"))  # fixed seed
    for bad in ("blur3", "jpeg0", "resize0", "shift"):
        with pytest.raises(YolocamError, match="perturbation"):
            S.parse_perturbation(bad)


def cv2_blur(image):
    import cv2

    return cv2.GaussianBlur(image, (5, 5), 1.5)


def test_match_detections_same_class_best_iou_else_lost():
    boxes = [[0, 0, 10, 10], [20, 20, 40, 40], [50, 50, 60, 60]]
    new = [[21, 20, 41, 40], [0, 1, 10, 11], [50, 50, 60, 60]]
    index, iou = S.match_detections(boxes, [0, 1, 2], new, [1, 0, 1])
    assert index.tolist() == [1, 0, -1]  # the third changed class: lost
    assert iou[0] == pytest.approx(90 / 110, abs=1e-4) and math.isnan(float(iou[2]))
    index, iou = S.match_detections(boxes, [0, 1, 2], torch.zeros(0, 4), [])
    assert index.tolist() == [-1, -1, -1]


def test_aggregate_over_the_matched_detections():
    recs = [{"perturbation": "jpeg90", "matched": True, "r": r, "peak_kept": k, "dconf": 0.01, "box_iou": 0.9}
            for r, k in ((0.9, True), (0.8, True), (0.5, False))]
    recs.append({"perturbation": "jpeg90", "matched": False, "r": float("nan"), "peak_kept": None,
                 "dconf": float("nan"), "box_iou": float("nan")})
    (row,) = S.aggregate(recs)
    assert row["detections"] == 4 and row["matched"] == 0.75
    assert row["r_median"] == pytest.approx(0.8) and row["peak_kept"] == pytest.approx(2 / 3)
    assert row["r_p10"] == pytest.approx(0.56)  # linear interpolation between 0.5 and 0.8
    assert row["box_iou_median"] == pytest.approx(0.9)


def test_reexported_from_metrics():
    import yolocam.metrics as M

    assert M.stability is S.stability and M.map_correlation is S.map_correlation


class SquareExplainer:
    """A stand-in `Explainer`: detects the bright square(s) of an image (one box over all bright pixels) and
    explains it by the blurred image itself, so its map moves with the content exactly (or, `fixed`, stays
    put: a map that ignores the image)."""

    def __init__(self, fixed: bool = False):
        self.fixed = fixed

    def explain(self, image, conf=None, iou=0.7):
        from types import SimpleNamespace

        import cv2

        ys, xs = np.nonzero(image[..., 0] > 127)
        if not len(xs):
            return [SimpleNamespace(detections=[])]
        box = [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]
        heat = cv2.GaussianBlur(image[..., 0].astype(np.float32) / 255, (0, 0), 3)
        if self.fixed:
            heat = np.asarray(bump(40, 30, sigma=6, shape=image.shape[:2]))
        return [SimpleNamespace(detections=[SimpleNamespace(box=box, cls=0, conf=0.9, heatmap=heat)])]


def square_image():
    image = np.zeros((H, W, 3), np.uint8)
    image[24:44, 30:52] = 255
    image[30:34, 36:40] = 120  # a darker notch: the map has a structure inside the box
    return image


def test_stability_maps_boxes_and_maps_back_into_the_original_frame():
    records = S.stability(SquareExplainer(), square_image(), ["shift2_1", "shift-7_3", "resize0.95", "jpeg90"])
    by = {r["perturbation"]: r for r in records}
    assert list(by) == ["shift2_1", "shift-7_3", "resize0.95", "jpeg90"]
    for name in ("shift2_1", "shift-7_3"):  # the content moved exactly: the same box and map after mapping back
        assert by[name]["matched"] and by[name]["box_iou"] == pytest.approx(1.0)
        assert by[name]["r"] == pytest.approx(1.0, abs=1e-6) and by[name]["peak_kept"] and by[name]["peak_shift"] == 0
        assert by[name]["dconf"] == 0.0
    assert by["resize0.95"]["box_iou"] > 0.9 and by["resize0.95"]["r"] > 0.95
    assert by["jpeg90"]["r"] > 0.95 and by["jpeg90"]["peak_kept"]
    # a map that stays where it was while the content moves is not stable under the shift
    fixed = {r["perturbation"]: r for r in S.stability(SquareExplainer(fixed=True), square_image(), ["shift7_3"])}
    assert fixed["shift7_3"]["r"] < 0.9
    assert S.stability(SquareExplainer(), np.zeros((H, W, 3), np.uint8), ["jpeg90"]) == []  # nothing detected


def test_a_detection_the_change_removes_is_lost():
    image = square_image()
    image[24:44, 30:33] = 0  # the square now spans x 33..52: moved 52 px left, it leaves the image
    (rec,) = S.stability(SquareExplainer(), image, ["shift-52_0"])
    assert not rec["matched"] and math.isnan(rec["r"]) and rec["peak_kept"] is None
    assert S.aggregate([rec])[0]["matched"] == 0.0


@pytest.fixture(scope="module")
def default_explainer():
    import yolocam

    return yolocam.Explainer("demo-v8", imgsz=320)


def test_default_is_stable_under_jpeg90_on_generated_scenes(default_explainer):
    """The bundled default explanation (`yolocam.defaults`) on three held-out scenes at imgsz 320."""
    from yolocam.demo.scenes import make_scene, scene_seed

    records = []
    for i in range(3):
        scene = make_scene(scene_seed(2026, "test", i))
        records += S.stability(default_explainer, scene.image, perturbations=["jpeg90"])
    (row,) = S.aggregate(records)
    # measured with the default aalayercam, fine+backbone, gate (17 detections): matched 1.0, r median 0.992,
    # r p10 0.959, peak kept 0.82, |dconf| 0.006, box IoU 0.987 (the earlier ssgradcam++ default: r 0.896,
    # p10 0.379, peak kept 0.53, which fails here); thresholds well below so float rounding does not flake
    assert row["detections"] >= 12
    assert row["matched"] >= 0.9
    assert row["r_median"] >= 0.85
    assert row["r_p10"] >= 0.7
    assert row["peak_kept"] >= 0.6
    assert row["box_iou_median"] >= 0.9
    assert all(r["perturbation"] == "jpeg90" for r in records)


def test_compare_methods_stability_columns(tmp_path):
    from yolocam.evaluation.compare import STABILITY_COLUMNS, compare_methods, format_comparison, save_comparison

    rows = compare_methods("demo-v8", scenes=1, imgsz=160, layers="neck", fuse="sum", methods=["hirescam"], steps=2,
                           faithful=1, stability=True)
    (row,) = rows
    assert row["detections"] > 0
    assert -1 <= row["jpeg90_r"] <= 1 and -1 <= row["shift2_r"] <= 1
    assert 0 <= row["jpeg90_peak"] <= 1 and 0 <= row["shift2_peak"] <= 1
    assert "JPEG-r" in format_comparison(rows) and "Shift-pk" in format_comparison(rows)
    header = (save_comparison(rows, tmp_path / "cmp") / "compare_methods.csv").read_text().splitlines()[0]
    assert header.endswith(",".join(STABILITY_COLUMNS))


def test_val_compare_methods_passes_stability(tmp_path, capsys):
    import argparse

    from yolocam.evaluation.validation import main_val

    args = argparse.Namespace(model="demo-v8", data=None, method=None, target="class", layers="neck", fuse="sum",
                              imgsz=160, conf=0.25, iou=0.7, device="cpu", out=str(tmp_path / "cmp"),
                              max_images=None, max_explanations=None, compare_methods=["hirescam"], scenes=1,
                              stability=True)
    assert main_val(args) == 0
    assert "JPEG-r" in capsys.readouterr().out
    assert "shift2_peak" in (tmp_path / "cmp" / "compare_methods.csv").read_text()
