"""The HTML gallery, rendered by a real headless Chromium (installed by .ci/install_chromium.sh)."""

from __future__ import annotations

import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from yolocam.output.export import ExportWriter
from yolocam.output.gallery import render_gallery, write_gallery
from yolocam.output.results import DetectionExplanation, ImageExplanation

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
                  "--disable-default-apps", "--mute-audio"]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise AssertionError("no chromium on PATH: run .ci/install_chromium.sh (apt-get install chromium)")


def dump_dom(page: Path, fragment: str, user_data_dir: Path) -> str:
    """The DOM of `page#fragment` after its scripts ran and its images loaded (Chromium --dump-dom)."""
    url = page.resolve().as_uri() + (f"#{fragment}" if fragment else "")
    proc = subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={user_data_dir}", "--dump-dom", url],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "<body" in proc.stdout, proc.stderr[-2000:]
    return proc.stdout


class Page(HTMLParser):
    """The parts of a dumped gallery DOM the tests look at: body attributes, cards, and their images."""

    def __init__(self, dom: str):
        super().__init__()
        self.body: dict = {}
        self.cards: list[dict] = []
        self.images: list[dict] = []
        self.feed(dom)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "body":
            self.body = a
        elif tag == "figure" and "det" in (a.get("class") or "").split():
            self.cards.append(a)
        elif tag == "img" and self.cards and a.get("src", "").endswith((".png", ".jpg")) and "summary" not in a["src"]:
            self.images.append(dict(a, card=self.cards[-1]["id"]))

    def visible(self) -> list[dict]:
        return [c for c in self.cards if "hidden" not in c]


NAMES = ("circle", "square", "triangle", "cross")
# (file name, [(class, conf), ...]) per image; two images share a file name on purpose.
LAYOUT = [("a/one.png", [(0, 0.91), (1, 0.42), (1, 0.77)]), ("b/one.png", [(2, 0.55)]),
          ("c/two & <three>.png", [(1, 0.63), (3, 0.20), (0, 0.35)]), ("d/none.png", [])]


@pytest.fixture(scope="module")
def gallery(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("gallery")
    rng = np.random.default_rng(0)
    with ExportWriter(out, meta={"model": "m.pt", "method": "ssgradcam++", "target": "class", "layers": "neck"},
                      html=True) as writer:
        for path, dets in LAYOUT:
            image = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
            explained = [DetectionExplanation([4.0 + k, 5.0, 30.0, 33.5], cls, NAMES[cls], conf, 100 + k, 0,
                                              rng.random((40, 56), dtype=np.float32))
                         for k, (cls, conf) in enumerate(dets)]
            writer.add(ImageExplanation(path, image, explained))
        writer.add(ImageExplanation("e/broken.jpg", None, [], error="cannot decode image: e/broken.jpg"))
    return out, writer.manifest


def test_page_is_self_contained(gallery):
    out, manifest = gallery
    html = (out / "index.html").read_text()
    assert "<style>" in html and "<script>" in html
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)  # no network, no CDN
    assert "@import" not in html and "fetch(" not in html
    for img in manifest["images"]:
        for det in img["detections"]:
            assert (out / det["overlay"]).is_file()
    assert "two &amp; &lt;three&gt;" in html  # file names are escaped
    assert render_gallery(manifest) == html  # the same manifest renders the same page


def test_browser_shows_every_detection_with_loaded_overlay(gallery, tmp_path):
    out, manifest = gallery
    page = Page(dump_dom(out / "index.html", "", tmp_path / "profile"))
    n = sum(len(dets) for _, dets in LAYOUT)
    assert page.body.get("data-ready") == "1" and page.body.get("data-shown") == str(n)
    assert len(page.cards) == n and len(page.visible()) == n
    assert len(page.images) == n
    assert all(img.get("data-loaded") == "1" for img in page.images), page.images
    expected = {f"det-{i}-{d['index']}": (d["name"], d["conf"]) for i, img in enumerate(manifest["images"])
                for d in img["detections"]}
    got = {c["id"]: (c["data-name"], float(c["data-conf"])) for c in page.cards}
    assert got.keys() == expected.keys()
    for key, (name, conf) in expected.items():
        assert got[key][0] == name and got[key][1] == pytest.approx(conf, abs=1e-6)


@pytest.mark.parametrize("fragment", ["class=square", "class=1"])
def test_browser_class_filter_from_url(gallery, tmp_path, fragment):
    out, _ = gallery
    page = Page(dump_dom(out / "index.html", fragment, tmp_path / "profile"))
    squares = [c for c in page.cards if c["data-name"] == "square"]
    assert len(squares) == 3
    assert page.visible() == squares
    assert all("hidden" in c for c in page.cards if c["data-name"] != "square")
    assert page.body["data-filter"] == "square" and page.body["data-shown"] == "3"


def test_browser_sort_by_confidence_across_images(gallery, tmp_path):
    out, _ = gallery
    write_gallery(out)  # re-rendered from manifest.json on disk
    page = Page(dump_dom(out / "index.html", "sort=conf-desc&min=0.3", tmp_path / "profile"))
    confs = [float(c["data-conf"]) for c in page.visible()]
    assert confs == sorted((conf for _, dets in LAYOUT for _, conf in dets if conf >= 0.3), reverse=True)
    assert page.body["data-sort"] == "conf-desc"
    assert [float(c["data-conf"]) for c in page.cards if "hidden" in c] == [0.20]
