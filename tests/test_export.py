"""Export folder: files as design.md fixes them, round trip, unique stems, atomic writes, writer thread."""

from __future__ import annotations

import json
import os
import threading

import cv2
import numpy as np
import pytest

import yolocam
from yolocam.output import files as export_mod
from yolocam.errors import YolocamError
from yolocam.output.export import ExportWriter
from yolocam.output.files import increment_dir
from yolocam.output.reader import load_output
from yolocam.output.render import CROP_SIDE, crop_region, summary_grid
from yolocam.explain.pipeline import BackgroundWriter
from yolocam.output.results import DetectionExplanation, ImageExplanation

META = {"model": "synthetic.pt", "method": "ssgradcam++", "target": "class", "layers": "neck"}
NAMES = ("circle", "square", "triangle", "cross")


def make_result(seed: int, n: int, path: str | None = None, size=(48, 64)) -> ImageExplanation:
    """An ImageExplanation with `n` random detections on a random (H, W) image."""
    rng = np.random.default_rng(seed)
    h, w = size
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    dets = []
    for k in range(n):
        x1, y1 = float(rng.uniform(0, w / 2)), float(rng.uniform(0, h / 2))
        box = [x1, y1, x1 + float(rng.uniform(4, w / 2)), y1 + float(rng.uniform(4, h / 2))]
        cls = int(rng.integers(0, 4))
        heat = rng.random((h, w), dtype=np.float32)
        dets.append(DetectionExplanation(box, cls, NAMES[cls], float(0.9 - 0.1 * k), int(rng.integers(0, 500)),
                                         int(rng.integers(0, 3)), heat))
    return ImageExplanation(path, image, dets, meta=dict(META))


@pytest.fixture(scope="module")
def source_image(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("src") / "photo.png"
    cv2.imwrite(str(path), make_result(99, 0).image)
    return str(path)


def test_save_writes_design_files_and_round_trips(tmp_path, source_image):
    result = make_result(1, 3, path=source_image)
    out = result.save(tmp_path / "out")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["version"] == 1 and manifest["errors"] == []
    assert {k: manifest[k] for k in META} == META
    [img] = manifest["images"]
    assert img["path"] == source_image and img["stem"] == "photo"
    assert (img["width"], img["height"]) == (64, 48)
    assert img["heatmaps"] == "photo/heatmaps.npz"
    assert [d["index"] for d in img["detections"]] == [0, 1, 2]
    for k, (entry, det) in enumerate(zip(img["detections"], result.detections)):
        assert entry["overlay"] == f"photo/{k:03d}_{det.name}.png"
        overlay = cv2.imread(str(out / entry["overlay"]))
        assert overlay is not None and overlay.shape == (48, 64, 3)
        assert (entry["cls"], entry["name"], entry["anchor"], entry["level"]) == (det.cls, det.name, det.anchor,
                                                                                  det.level)
    with np.load(out / "photo" / "heatmaps.npz") as npz:
        assert npz["heatmaps"].shape == (3, 48, 64) and npz["heatmaps"].dtype == np.float16
        assert npz["boxes"].dtype == np.float32 and npz["classes"].dtype == np.int32
        assert npz["scores"].dtype == np.float32
        np.testing.assert_allclose(npz["boxes"], [d["box"] for d in img["detections"]], rtol=1e-6)
        np.testing.assert_array_equal(npz["classes"], [d["cls"] for d in img["detections"]])
        np.testing.assert_allclose(npz["scores"], [d["conf"] for d in img["detections"]], rtol=1e-6)

    [back] = yolocam.load_output(out)
    assert back.path == source_image and back.image is not None and back.image.shape == (48, 64, 3)
    assert len(back.detections) == 3
    for a, b in zip(result.detections, back.detections):
        np.testing.assert_allclose(a.box, b.box, rtol=1e-6)
        assert (a.cls, a.name, a.anchor, a.level) == (b.cls, b.name, b.anchor, b.level)
        assert a.conf == pytest.approx(b.conf, rel=1e-6)
        assert b.heatmap.dtype == np.float32 and b.heatmap.shape == a.heatmap.shape
        np.testing.assert_allclose(b.heatmap, a.heatmap, atol=1e-3)  # float16 storage


def test_no_detections_and_errors_round_trip(tmp_path):
    with ExportWriter(tmp_path, meta=META) as writer:
        writer.add(make_result(2, 0, path="empty.png"))
        writer.add(ImageExplanation("broken.jpg", None, [], error="cannot decode image: broken.jpg"))
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["images"][0]["detections"] == []
    assert manifest["errors"] == [{"path": "broken.jpg", "error": "cannot decode image: broken.jpg"}]
    with np.load(tmp_path / "empty" / "heatmaps.npz") as npz:
        assert npz["heatmaps"].shape == (0, 48, 64) and npz["boxes"].shape == (0, 4)
    ok, bad = load_output(tmp_path)
    assert ok.ok and ok.detections == [] and ok.image is None  # the recorded path does not exist
    assert not bad.ok and "broken.jpg" in bad.error


def test_unique_stems_for_same_file_names(tmp_path):
    with ExportWriter(tmp_path / "out", meta=META) as writer:
        stems = [writer.add(make_result(i, 1, path=p))["stem"]
                 for i, p in enumerate(["a/img.png", "b/img.png", "c/IMG.jpg", "d/img.png"])]
        stems.append(writer.add(make_result(5, 1, path=None))["stem"])
        stems.append(writer.add(make_result(6, 1, path=None))["stem"])
    assert stems == ["img", "img_2", "IMG_3", "img_4", "image", "image_2"]
    assert len({s.casefold() for s in stems}) == len(stems)
    for s in stems:
        assert (tmp_path / "out" / s / "heatmaps.npz").is_file()
    # A second writer continuing the folder keeps the existing stems reserved ...
    with ExportWriter(tmp_path / "out", meta=META) as writer:
        assert writer.add(make_result(7, 1, path="e/img.png"))["stem"] == "img_5"
    assert len(json.loads((tmp_path / "out" / "manifest.json").read_text())["images"]) == 7
    # ... while append=False starts a fresh manifest.
    with ExportWriter(tmp_path / "out", meta=META, append=False) as writer:
        assert writer.add(make_result(8, 1, path="e/img.png"))["stem"] == "img"
    assert len(json.loads((tmp_path / "out" / "manifest.json").read_text())["images"]) == 1


def test_manifest_rewritten_as_images_complete_and_crops(tmp_path):
    writer = ExportWriter(tmp_path, meta=META, crops=True)
    for i in range(3):
        writer.add(make_result(10 + i, 2, path=f"im{i}.png"))
        on_disk = json.loads((tmp_path / "manifest.json").read_text())
        assert len(on_disk["images"]) == i + 1
    writer.finish()
    entry = on_disk["images"][0]["detections"][1]
    crop = cv2.imread(str(tmp_path / entry["crop"]))
    x1, y1, x2, y2 = (int(round(v)) for v in entry["box"])
    assert entry["crop"] == "im0/crops/001_" + entry["name"] + ".png"
    rx1, ry1, rx2, ry2 = crop_region((48, 64), entry["box"])  # the box plus context, zoomed to CROP_SIDE
    assert rx1 <= x1 and ry1 <= y1 and rx2 >= min(x2, 64) and ry2 >= min(y2, 48)
    assert max(crop.shape[:2]) == CROP_SIDE


def test_interrupted_write_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "heatmaps.npz"

    def failing_replace(src, dst):
        raise KeyboardInterrupt  # the run is interrupted between writing and renaming

    monkeypatch.setattr(export_mod.os, "replace", failing_replace)
    with pytest.raises(KeyboardInterrupt):
        export_mod.atomic_write_bytes(target, b"x" * 1000)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == []  # neither the final name nor the temporary file
    export_mod.atomic_write_bytes(target, b"abc")
    assert target.read_bytes() == b"abc" and os.listdir(tmp_path) == ["heatmaps.npz"]


def test_unwritable_out_and_bad_folders(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(YolocamError, match="not writable"):
        ExportWriter(blocker / "out")
    with pytest.raises(YolocamError, match="no manifest.json"):
        load_output(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(YolocamError, match="corrupt manifest"):
        load_output(tmp_path)


def test_increment_dir(tmp_path):
    base = tmp_path / "explain"
    assert increment_dir(base) == base
    base.mkdir()
    assert increment_dir(base) == tmp_path / "explain2"
    (tmp_path / "explain2").mkdir()
    assert increment_dir(base) == tmp_path / "explain3"


def test_background_writer_writes_all_off_thread_and_reports_failures(tmp_path):
    threads = set()
    done = []

    def on_done(result, entry):
        threads.add(threading.get_ident())
        done.append(entry["stem"] if entry else None)

    with BackgroundWriter(ExportWriter(tmp_path / "ok", meta=META, html=True), maxsize=2, on_done=on_done) as bg:
        for i in range(5):
            bg.put(make_result(20 + i, 1, path=f"x{i}.png"))
    assert done == [f"x{i}" for i in range(5)]
    assert threading.get_ident() not in threads
    assert len(json.loads((tmp_path / "ok" / "manifest.json").read_text())["images"]) == 5
    assert (tmp_path / "ok" / "index.html").is_file()

    class Boom(ExportWriter):
        def add(self, result):
            if result.path == "bad.png":
                raise OSError("disk full")
            return super().add(result)

    bg = BackgroundWriter(Boom(tmp_path / "boom", meta=META), maxsize=1)
    bg.put(make_result(30, 1, path="good.png"))
    bg.put(make_result(31, 1, path="bad.png"))
    with pytest.raises(OSError, match="disk full"):
        for i in range(5):  # the failure surfaces on a later put or on close
            bg.put(make_result(32 + i, 1, path=f"later{i}.png"))
        bg.close()
    bg.close()
    stems = [img["stem"] for img in json.loads((tmp_path / "boom" / "manifest.json").read_text())["images"]]
    assert stems == ["good"]  # written before the failure, nothing after it


def test_summary_grid_has_one_tile_per_detection_plus_the_image():
    result = make_result(40, 5, size=(60, 80))
    grid = summary_grid(result, tile=100)
    # the image with every box on top, then 5 zoomed crop tiles: 3 columns x 2 rows of 100 + 22 px caption
    assert grid.dtype == np.uint8 and grid.shape[1] == 3 * 100 and grid.shape[0] > 2 * 122
    tiles = grid[-2 * 122:]
    assert tiles[122:, 100:200].std() > 0  # the fifth tile holds a crop ...
    assert tiles[122:, 200:300].std() == 0  # ... and the sixth slot is empty
    capped = summary_grid(result, tile=50, max_tiles=3)  # image + 2 detections (2 columns, 1 row)
    assert capped.shape[1] == 2 * 50 and capped[-72:, 50:].std() > 0
    with pytest.raises(YolocamError):
        summary_grid(ImageExplanation("x.png", None, [], error="bad"))
