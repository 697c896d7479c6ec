"""What an overlay looks like: heat only where there is heat, the scene kept in its own colours,
readable labels (Pillow's built-in font) that do not cover each other, a summary that scales."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from yolocam.output.labels import label_patch, place_labels
from yolocam.output.render import HEAT_FLOOR, blend_heatmap, box_crop, crop_region, draw_boxes, summary_grid
from yolocam.output.results import DetectionExplanation, ImageExplanation


def delta_e(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """CIE76 colour difference per pixel between two BGR uint8 images (CIELAB, L in 0..100)."""
    la = cv2.cvtColor(a.astype(np.float32) / 255.0, cv2.COLOR_BGR2Lab)
    lb = cv2.cvtColor(b.astype(np.float32) / 255.0, cv2.COLOR_BGR2Lab)
    return np.linalg.norm(la - lb, axis=-1)


def photo() -> np.ndarray:
    """ultralytics' bus.jpg (shipped inside the installed package), or a colourful stand-in."""
    import ultralytics

    path = Path(ultralytics.__file__).parent / "assets" / "bus.jpg"
    image = cv2.imread(str(path)) if path.is_file() else None
    if image is None:
        rng = np.random.default_rng(0)
        image = cv2.resize(rng.integers(0, 256, (27, 20, 3), dtype=np.uint8), (810, 1080), cv2.INTER_CUBIC)
    return image


def blob(shape, cx, cy, sx, sy) -> np.ndarray:
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    return np.exp(-(((xx - cx) / sx) ** 2 + ((yy - cy) / sy) ** 2)).astype(np.float32)


def test_outside_the_heat_the_overlay_keeps_the_scene_colours():
    image = photo()
    heat = blob(image.shape, 130, 560, 60, 120)
    out = blend_heatmap(image, heat)
    de = delta_e(image, out)
    cold = heat < HEAT_FLOOR
    assert cold.mean() > 0.8
    assert de[cold].max() < 1.0  # no heat: the pixel is the original (up to Lab rounding)
    lukewarm = heat < 0.3
    assert np.percentile(de[lukewarm], 99) < 12 and de[lukewarm].mean() < 2.0  # faint heat: barely tinted
    assert de[heat > 0.9].mean() > 20  # the heat itself is plainly visible


def test_saturated_shapes_keep_their_hue_beside_the_heat():
    """A magenta cross and a green circle away from the heat stay magenta and green (the old overlay
    washed the whole image in the colour map's blue)."""
    image = np.full((200, 300, 3), 200, np.uint8)
    cv2.line(image, (30, 60), (90, 140), (255, 0, 255), 12)
    cv2.line(image, (90, 60), (30, 140), (255, 0, 255), 12)
    cv2.circle(image, (160, 100), 30, (0, 200, 0), -1)
    heat = blob(image.shape, 250, 100, 20, 20)
    out = blend_heatmap(image, heat)
    assert delta_e(image, out)[:, :200].max() < 1.0
    assert out[100, 60].tolist() == [255, 0, 255] and out[100, 160].tolist() == [0, 200, 0]
    assert not np.array_equal(out[100, 250], image[100, 250])


def test_empty_or_invalid_heat_leaves_the_image_alone():
    image = photo()[:100, :100].copy()
    assert np.array_equal(blend_heatmap(image, np.zeros(image.shape[:2], np.float32)), image)
    nan = np.full(image.shape[:2], np.nan, np.float32)
    assert np.array_equal(blend_heatmap(image, nan), image)


def test_labels_use_a_real_font_and_do_not_overlap():
    small, big = label_patch("0.95", 12), label_patch("0.95", 30)
    assert big.shape[0] > 2 * small.shape[0] - 4  # scalable, not a bitmap font
    assert not np.array_equal(label_patch("0.95", 16), label_patch("Ø.95", 16))
    # ten boxes crowded into one corner: every label finds a place of its own
    boxes = [[40 + 6 * k, 60 + 4 * k, 90 + 6 * k, 100 + 4 * k] for k in range(10)]
    sizes = [(label_patch(f"cross 0.{90 - k}", 14).shape[1], label_patch("x", 14).shape[0]) for k in range(10)]
    spots = place_labels(boxes, sizes, (480, 640))
    rects = [(x, y, x + w, y + h) for (x, y), (w, h) in zip(spots, sizes)]
    for i, a in enumerate(rects):
        assert 0 <= a[0] and a[2] <= 640 and 0 <= a[1] and a[3] <= 480
        for b in rects[i + 1:]:
            assert min(a[2], b[2]) <= max(a[0], b[0]) or min(a[3], b[3]) <= max(a[1], b[1]), (a, b)


def _result(n: int, size=(480, 640)) -> ImageExplanation:
    rng = np.random.default_rng(n)
    h, w = size
    image = rng.integers(60, 200, (h, w, 3), dtype=np.uint8)
    dets = []
    for k in range(n):
        x, y = float(rng.uniform(0, w - 60)), float(rng.uniform(0, h - 60))
        box = [x, y, x + float(rng.uniform(20, 60)), y + float(rng.uniform(20, 60))]
        heat = blob(size, (box[0] + box[2]) / 2, (box[1] + box[3]) / 2, 15, 15)
        dets.append(DetectionExplanation(box, k % 4, "cross", 0.95 - 0.01 * k, k, 0, heat))
    return ImageExplanation("scene.png", image, dets)


def test_summary_with_many_boxes_shows_the_top_ones_and_says_so():
    grid = summary_grid(_result(30), tile=160, max_tiles=25)
    cols = grid.shape[1] // 160
    assert grid.dtype == np.uint8 and cols >= 5
    few = summary_grid(_result(3), tile=160)
    assert few.shape[1] < grid.shape[1]
    # the crop tiles: 24 of 30 detections, in ceil(24 / cols) rows of 160 + 22 px
    rows = -(-24 // cols)
    assert grid.shape[0] > rows * 182


def test_box_crop_zooms_on_the_box_with_context():
    result = _result(1)
    d = result.detections[0]
    region = crop_region(result.image.shape, d.box)
    assert region[0] <= d.box[0] and region[1] <= d.box[1] and region[2] >= d.box[2] and region[3] >= d.box[3]
    crop = box_crop(result.image, d.heatmap, d.box, "cross 0.95", size=256)
    assert max(crop.shape[:2]) == 256
    out = result.image.copy()
    draw_boxes(out, result.detections)
    assert not np.array_equal(out, result.image)


@pytest.mark.parametrize("shape", [(30, 20), (2000, 3000)])
def test_tiny_and_large_images_draw(shape):
    result = _result(2, size=shape) if min(shape) > 100 else None
    if result is None:
        image = np.zeros((*shape, 3), np.uint8)
        d = DetectionExplanation([2, 2, 15, 25], 0, "dot", 0.5, 0, 0, blob(shape, 8, 12, 4, 4))
        result = ImageExplanation(None, image, [d])
    assert summary_grid(result).shape[2] == 3
    assert box_crop(result.image, result.detections[0].heatmap, result.detections[0].box, "x").ndim == 3


def test_labels_keep_other_small_boxes_visible():
    boxes = [[100 + 40 * k, 200, 130 + 40 * k, 230] for k in range(6)]  # a row of small boxes 10 px apart
    size = label_patch("cross 0.95", 14).shape[1::-1]
    spots = place_labels(boxes, [size] * len(boxes), (480, 640))
    for i, (x, y) in enumerate(spots):
        rect = (x, y, x + size[0], y + size[1])
        for j, b in enumerate(boxes):
            if j != i:
                assert min(rect[2], b[2]) <= max(rect[0], b[0]) or min(rect[3], b[3]) <= max(rect[1], b[1]), (i, j)
