"""Busy pictures: 80 class colours a person tells apart, and labels that are drawn whole or not at all."""

from __future__ import annotations

import itertools
from pathlib import Path

import cv2
import numpy as np

from yolocam.output import labels
from yolocam.output.labels import class_colour, conf_text, draw_labelled_boxes


def lab(colours) -> np.ndarray:
    out = cv2.cvtColor(np.uint8([colours]), cv2.COLOR_BGR2LAB)[0].astype(np.float64)
    return out * (100 / 255, 1, 1) - (0, 128, 128)


def test_eighty_class_colours_differ_perceptibly():
    colours = [class_colour(c) for c in range(80)]
    points = lab(colours)
    closest = min(float(np.linalg.norm(a - b)) for a, b in itertools.combinations(points, 2))
    assert closest >= 15, closest  # CIE76; measured 19.3 (the fixed order before: 3.7, two nearly equal ambers)


def test_crowded_labels_are_drawn_whole_most_confident_first(monkeypatch):
    import ultralytics

    image = cv2.imread(str(Path(ultralytics.__file__).parent / "assets" / "bus.jpg"))
    assert image is not None
    rng = np.random.default_rng(0)
    boxes = []  # 100 boxes in the top third, as a random-weight model at --conf 0.0001 puts them
    for _ in range(100):
        x, y = rng.uniform(0, 700), rng.uniform(0, 300)
        boxes.append([x, y, x + rng.uniform(20, 100), y + rng.uniform(10, 60)])
    texts = [f"person {conf_text(c)}" for c in np.linspace(0.9, 0.0001, 100)]
    pasted = []
    real = labels.paste
    monkeypatch.setattr(labels, "paste", lambda img, patch, x, y: (pasted.append((x, y, patch.shape[1], patch.shape[0])),
                                                                   real(img, patch, x, y)))
    draw_labelled_boxes(image, boxes, texts, [class_colour(0)] * 100)
    assert 10 < len(pasted) < 100  # the picture cannot hold them all: some are left out ...
    first = labels.label_patch(texts[0], labels.font_size_for(image.shape), class_colour(0)).shape
    assert (pasted[0][2], pasted[0][3]) == (first[1], first[0])  # ... the most confident one is drawn
    for (ax, ay, aw, ah), (bx, by, bw, bh) in itertools.combinations(pasted, 2):  # ... and none covers another
        inter = max(0, min(ax + aw, bx + bw) - max(ax, bx)) * max(0, min(ay + ah, by + bh) - max(ay, by))
        assert inter <= labels.HIDDEN_SHARE * min(aw * ah, bw * bh)


def test_tiny_confidences_keep_their_digits():
    assert [conf_text(c) for c in (0.953, 0.01, 0.0099, 0.00012)] == ["0.95", "0.01", "0.0099", "0.00012"]


def test_tiny_confidences_keep_their_digits_in_every_picture_and_the_gallery(tmp_path, monkeypatch):
    """A random-weight model at --conf 0.0001: overlays, crops, the summary and the gallery cards all say 0.00016,
    not 0.00 or 0.000 for every box."""
    from yolocam.output import render
    from yolocam.output.export import ExportWriter
    from yolocam.output.results import DetectionExplanation, ImageExplanation

    assert [conf_text(c, 3) for c in (0.9531, 0.001, 0.00016)] == ["0.953", "0.001", "0.00016"]
    drawn = []
    real = labels.label_patch
    spy = lambda text, *a, **k: (drawn.append(text), real(text, *a, **k))[1]  # noqa: E731
    monkeypatch.setattr(labels, "label_patch", spy)
    monkeypatch.setattr(render, "label_patch", spy)
    yy, xx = np.mgrid[0:120, 0:160]
    heat = np.exp(-(((xx - 80) / 15.0) ** 2 + ((yy - 60) / 15.0) ** 2)).astype(np.float32)
    det = DetectionExplanation([50.0, 30.0, 110.0, 90.0], 0, "person", 0.00016, 0, 2, heat)
    result = ImageExplanation("tiny.png", np.full((120, 160, 3), 90, np.uint8), [det])
    render.summary_grid(result, tile=100)
    with ExportWriter(tmp_path, html=True, crops=True) as writer:
        writer.add(result)
    texts = [t for t in drawn if "person" in t]
    assert len(texts) >= 4 and all(t.endswith(" 0.00016") for t in texts), texts  # summary (2), overlay, crop
    page = (tmp_path / "index.html").read_text()
    assert '<span class="conf">0.00016</span>' in page and 'alt="person 0.00016"' in page
