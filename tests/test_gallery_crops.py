"""Gallery cards show each detection's zoomed crop (box plus context), with the full overlay a click away."""

from __future__ import annotations

from html.parser import HTMLParser

import cv2
import numpy as np
import pytest

from yolocam.errors import YolocamError
from yolocam.output.export import ExportWriter
from yolocam.output.render import CROP_SIDE, crop_region
from yolocam.output.results import DetectionExplanation, ImageExplanation

from test_gallery import Page, dump_dom


class Links(HTMLParser):
    def __init__(self, text: str):
        super().__init__()
        self.cards: list[dict] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "figure":
            self.cards.append({"links": [], "imgs": []})
        elif tag == "a" and self.cards:
            self.cards[-1]["links"].append(a["href"])
        elif tag == "img" and self.cards:
            self.cards[-1]["imgs"].append(a)


@pytest.mark.parametrize("save_format", ["png", "jpg"])
def test_cards_show_crops_linking_to_the_full_overlay(tmp_path, save_format):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:300, 0:400]
    boxes = [[50.0, 60.0, 90.0, 110.0], [200.0, 20.0, 380.0, 280.0]]
    dets = [DetectionExplanation(b, k, f"c{k}", 0.9 - 0.1 * k, k, 0,
                                 np.exp(-((xx - (b[0] + b[2]) / 2) ** 2 + (yy - (b[1] + b[3]) / 2) ** 2) / 200.0)
                                 .astype(np.float32)) for k, b in enumerate(boxes)]
    with ExportWriter(tmp_path, meta={"model": "m.pt", "method": "hirescam"}, html=True, crops=True,
                      save_format=save_format) as writer:
        entry = writer.add(ImageExplanation("pic.png", image, dets))
    cards = Links((tmp_path / "index.html").read_text()).cards
    assert len(cards) == 2
    for card, det in zip(cards, entry["detections"]):
        [img] = card["imgs"]
        assert img["src"] == det["crop"] and det["overlay"] in card["links"]
        assert det["overlay"].endswith("." + save_format) and det["crop"].endswith("." + save_format)
        crop = cv2.imread(str(tmp_path / det["crop"]))
        assert max(crop.shape[:2]) == CROP_SIDE
        assert (int(img["width"]), int(img["height"])) == (crop.shape[1], crop.shape[0])
        x1, y1, x2, y2 = crop_region(image.shape, det["box"])  # the box plus context, inside the image
        assert x1 <= det["box"][0] and x2 >= det["box"][2] and (x2 - x1) > (det["box"][2] - det["box"][0])
    page = Page(dump_dom(tmp_path / "index.html", "", tmp_path / "profile"))
    assert len(page.images) == 2 and all(i.get("data-loaded") == "1" for i in page.images)


def test_unknown_save_format_is_refused(tmp_path):
    with pytest.raises(YolocamError, match="save_format"):
        ExportWriter(tmp_path, save_format="gif")
