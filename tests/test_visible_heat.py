"""Heat a person can see in every picture yolocam draws (issue 26): maps are drawn on their energy scale
(the hottest pixels holding 80 % of the heat coloured, 50 % outlined) without changing the maps, with
a legend; one visual language (class colours, rotated boxes, plurals, head levels with their strides,
cards of even height, no image-level labels at the image corners)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from yolocam.output import render
from yolocam.output.export import ExportWriter
from yolocam.output.gallery import level_text, render_gallery
from yolocam.output.labels import PALETTE, class_colour
from yolocam.output.render import (HEAT_SHARE, OUTLINE_SHARE, blend_heatmap, box_crop, draw_heat, energy_levels,
                                   energy_scale, heat_legend, summary_grid)
from yolocam.output.results import DetectionExplanation, ImageExplanation

from test_gallery import dump_dom


def blob(shape, cx, cy, s) -> np.ndarray:
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    return np.exp(-(((xx - cx) / s) ** 2 + ((yy - cy) / s) ** 2)).astype(np.float32)


def sparse_map(shape=(240, 320)) -> np.ndarray:
    """What the evidence-grade default looks like: a few sharp peaks over a wide low tail."""
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    heat = 0.06 * np.exp(-np.hypot(xx - 160, yy - 120) / 30)
    for cx, cy in ((150, 110), (172, 128), (158, 134)):
        heat = heat + np.exp(-np.hypot(xx - cx, yy - cy) / 2.0)
    return (heat / heat.max()).astype(np.float32)


def changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(int) - b.astype(int)).max(axis=-1) > 8


def test_sparse_maps_are_drawn_as_regions_not_specks():
    image = np.full((240, 320, 3), 128, np.uint8)
    heat = sparse_map()
    old, new = changed(image, blend_heatmap(image, heat)), changed(image, draw_heat(image, heat))
    assert old.mean() < 0.004  # the raw scale: a few specks
    assert new.mean() > 5 * old.mean()  # the energy scale: the region holding the heat
    shown = energy_scale(heat, energy_levels(heat))
    outlined = shown >= 1 - OUTLINE_SHARE
    coloured = shown >= 1 - HEAT_SHARE
    assert abs(heat[outlined].sum() / heat.sum() - OUTLINE_SHARE) < 0.02  # the outline holds half the heat
    assert abs(heat[coloured].sum() / heat.sum() - HEAT_SHARE) < 0.02
    assert changed(image, draw_heat(image, heat))[outlined].all()
    white = (draw_heat(image, heat) >= 230).all(axis=-1)  # the outline: a white line along the region's edge
    kernel = np.ones((7, 7), np.uint8)
    edge = cv2.dilate(outlined.astype(np.uint8), kernel) > cv2.erode(outlined.astype(np.uint8), kernel)
    assert white.sum() > 40 and edge[white].all()


def test_energy_scale_of_one_gaussian_is_its_raw_scale_and_nothing_for_no_heat():
    heat = blob((200, 200), 100, 100, 25)
    shown = energy_scale(heat, energy_levels(heat))
    assert np.abs(shown - heat).max() < 0.02
    assert energy_levels(np.zeros((8, 8), np.float32)) is None
    image = np.full((50, 60, 3), 90, np.uint8)
    assert np.array_equal(draw_heat(image, np.zeros((50, 60), np.float32)), image)
    assert np.array_equal(draw_heat(image, np.full((50, 60), np.nan, np.float32)), image)


def test_the_scale_is_the_whole_maps_in_crops_and_resolution_independent():
    heat = sparse_map()
    levels = energy_levels(heat)
    full = cv2.resize(heat, (960, 720), interpolation=cv2.INTER_LINEAR)  # a compact map and its full-size copy
    assert np.abs(energy_levels(full / full.max()) - levels).max() < 0.03
    image = np.full((240, 320, 3), 128, np.uint8)
    far = heat + 0.9 * blob(heat.shape, 300, 20, 6)  # heat outside the crop changes the crop's drawing
    box = [140, 100, 180, 140]
    alone = box_crop(image, heat, box, size=128)
    assert not np.array_equal(alone, box_crop(image, far / far.max(), box, size=128))
    assert np.array_equal(alone, box_crop(image, heat, box, size=128, levels=levels))


def _det(box, cls, heat, **kw) -> DetectionExplanation:
    return DetectionExplanation(list(map(float, box)), cls, f"c{cls}", 0.9, 0, 1, heat, **kw)


def test_export_keeps_raw_maps_and_draws_boxes_in_class_colours(tmp_path):
    image = np.full((240, 320, 3), 60, np.uint8)
    heat = sparse_map()
    det = _det([130, 90, 190, 150], 3, heat)
    with ExportWriter(tmp_path, meta={"model": "m.pt", "strides": [8, 16, 32]}, crops=True) as writer:
        entry = writer.add(ImageExplanation("pic.png", image, [det]))
    with np.load(tmp_path / entry["heatmaps"]) as npz:
        assert np.abs(npz["heatmaps"][0].astype(np.float32) - heat).max() < 1e-3  # raw values, not the display
    colour = np.array(class_colour(3))
    assert tuple(colour) != tuple(PALETTE[0])
    for rel in (entry["detections"][0]["overlay"], entry["detections"][0]["crop"]):
        picture = cv2.imread(str(tmp_path / rel))
        assert (np.abs(picture.astype(int) - colour).max(axis=-1) < 3).sum() > 50, rel
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["strides"] == [8, 16, 32]


def test_summary_draws_rotated_boxes_a_legend_and_no_labels_for_image_level_maps(monkeypatch):
    image = np.full((200, 200, 3), 80, np.uint8)
    heat = blob((200, 200), 100, 100, 20)
    poly = [[100, 40], [160, 100], [100, 160], [40, 100]]
    drawn = []
    monkeypatch.setattr(render, "draw_boxes", lambda img, dets, labels=None, size=None: drawn.append(dets))
    summary_grid(ImageExplanation("x.png", image, [_det([40, 40, 160, 160], 1, heat, polygon=poly)]), tile=100)
    [[d]] = drawn
    assert d.polygon is not None and len(d.polygon) == 4  # the overview draws the rotated box
    drawn.clear()
    classes = [_det([0, 0, 200, 200], k, heat) for k in range(3)]
    grid = summary_grid(ImageExplanation("x.png", image, classes), tile=100)
    assert drawn == []  # image-level maps: no boxes, no labels at the image's corners
    legend = heat_legend(grid.shape[1])
    assert legend.shape == (26, grid.shape[1], 3) and (legend != 32).any()


def test_gallery_names_levels_by_stride_and_counts_in_the_singular():
    assert level_text(0, [8, 16, 32]) == "P3 (stride 8)" and level_text(2, [4, 8, 16, 32]) == "P4 (stride 16)"
    assert level_text(1) == "head level 1"
    det = {"index": 0, "box": [1.0, 2.0, 3.0, 4.0], "cls": 0, "name": "c0", "conf": 0.5, "level": 0,
           "overlay": "a/000_c0.png"}
    page = render_gallery({"images": [{"stem": "a", "path": "a.png", "width": 9, "height": 9, "detections": [det]}],
                           "errors": [], "strides": [8, 16, 32]})
    assert "1 image · 1 detection · 0 errors" in page and "1 images" not in page
    assert "P3 (stride 8)" in page and "level 0" not in page
    assert 'id="legend"' in page and "outlined" in page


def test_gallery_cards_are_of_even_height(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (200, 400, 3), dtype=np.uint8)
    boxes = [[10, 10, 40, 40], [20, 20, 380, 180], [300, 150, 330, 190]]  # square and clipped (wide) crops
    dets = [_det(b, k, blob((200, 400), (b[0] + b[2]) / 2, (b[1] + b[3]) / 2, 10)) for k, b in enumerate(boxes)]
    with ExportWriter(tmp_path, html=True, crops=True) as writer:
        writer.add(ImageExplanation("pic.png", image, dets))
    page = tmp_path / "index.html"
    probe = ("<script>document.querySelectorAll('figure.det img').forEach(function (f) {"
             "f.dataset.h = Math.round(f.getBoundingClientRect().height); });</script></body>")
    page.write_text(page.read_text().replace("</body>", probe))
    heights = [int(h) for h in __import__("re").findall(r'data-h="(\d+)"', dump_dom(page, "", tmp_path / "p"))]
    assert len(heights) == 3 and max(heights) - min(heights) <= 1, heights


@pytest.mark.parametrize("n, text", [(1, "1 image"), (0, "0 images"), (2, "2 images")])
def test_plural(n, text):
    from yolocam.cli.terminal import plural

    assert plural(n, "image") == text


def test_eighty_classes_get_distinct_colours():
    """An 80-class model (COCO-sized): every class its own colour, the first ten the fixed palette, and no
    two closer than 30 in RGB (measured minimum 31.4), so neighbouring boxes of different classes differ."""
    import itertools

    colours = [class_colour(c) for c in range(80)]
    assert colours[:len(PALETTE)] == list(PALETTE) and len(set(colours)) == 80
    closest = min(float(np.linalg.norm(np.subtract(a, b))) for a, b in itertools.combinations(colours, 2))
    assert closest >= 30, closest
    assert class_colour(80 + 10 * 144) == class_colour(80)  # past every candidate the colours repeat


def test_gallery_sections_of_one_card_sit_side_by_side(tmp_path):
    """Single-box images (`yolocam val`'s worst cases) share rows instead of one card per page-wide section; an
    image with several boxes keeps a row of its own."""
    image = np.full((120, 160, 3), 90, np.uint8)
    heat = blob((120, 160), 80, 60, 12)
    with ExportWriter(tmp_path, html=True, crops=True) as writer:
        for k in range(2):
            writer.add(ImageExplanation(f"single{k}.png", image, [_det([50, 30, 110, 90], k, heat)]))
        writer.add(ImageExplanation("several.png", image, [_det([50, 30, 110, 90], k, heat) for k in range(2)]))
    page = tmp_path / "index.html"
    probe = ("<script>document.querySelectorAll('section.image').forEach(function (s) {"
             "var r = s.getBoundingClientRect(); s.dataset.top = Math.round(r.top); "
             "s.dataset.w = Math.round(r.width); });</script></body>")
    page.write_text(page.read_text().replace("</body>", probe))
    dom = dump_dom(page, "", tmp_path / "p")
    import re

    found = re.findall(r'<section class="image"[^>]*data-count="(\d)"[^>]*data-top="(\d+)" data-w="(\d+)"', dom)
    assert len(found) == 3, found
    tops = [int(t) for _, t, _ in found]
    widths = [int(w) for _, _, w in found]
    assert tops[0] == tops[1] < tops[2], found  # the single cards in one row (headless window: 800 px), the pair below
    assert max(widths[:2]) < 300 < 600 < widths[2], found
