"""Image input as users hand it over: phone photos, odd file names, arrays of any dtype, folders."""

from __future__ import annotations

import json
import logging
import os
import unicodedata
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import yolocam
from conftest import assert_same_detections, predicted
from yolocam.cli import main
from yolocam.demo.models import demo_model_path
from yolocam.demo.scenes import make_scene
from yolocam.errors import YolocamError
from yolocam.inputs.images import load_image, resolve_source, to_bgr_uint8
from yolocam.output.files import safe_name

IMGSZ = 96


@pytest.fixture(scope="module")
def demo():
    return yolocam.Explainer("demo-v8", imgsz=320)


@pytest.fixture(scope="module")
def scene():
    return make_scene(3, size=(240, 320)).image


def write(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(path.suffix, image)
    assert ok
    buf.tofile(str(path))
    return path


# ------------------------------------------------------------------ EXIF orientation
@pytest.mark.parametrize("orientation", [6, 8])
def test_jpeg_with_exif_orientation_is_decoded_like_ultralytics_predict(orientation, scene, demo, tmp_path):
    from PIL import Image
    from ultralytics import YOLO
    from ultralytics.utils.patches import imread

    path = tmp_path / f"phone_{orientation}.jpg"
    exif = Image.Exif()
    exif[0x0112] = orientation  # the camera was held sideways: viewers rotate the stored pixels
    Image.fromarray(scene[:, :, ::-1]).save(path, quality=95, exif=exif.tobytes())

    image = load_image(path)
    assert image.shape == (scene.shape[1], scene.shape[0], 3)  # upright: the stored 240x320 turned
    np.testing.assert_array_equal(image, imread(str(path)))  # what ultralytics' predictor reads

    ours = demo.explain(str(path))[0].detections
    pred = YOLO(str(demo_model_path())).predict(str(path), imgsz=320, conf=0.25, verbose=False)[0]
    assert len(ours) == len(pred.boxes) > 0
    assert_same_detections(ours, predicted(pred), box_px=1e-2, conf=1e-4, threshold=0.25)  # predict fuses Conv+BN


# ------------------------------------------------------------------ paths with glob characters
def test_existing_paths_with_brackets_are_paths_not_globs(scene, tmp_path):
    a = write(tmp_path / "scene[1].png", scene)
    b = write(tmp_path / "set[a]" / "x.png", scene)
    assert resolve_source(str(a)) == [str(a)]
    assert resolve_source(str(tmp_path / "set[a]")) == [str(b)]
    # a pattern that is not an existing path is still a glob
    write(tmp_path / "g" / "img1.png", scene)
    write(tmp_path / "g" / "img2.png", scene)
    assert [Path(p).name for p in resolve_source(str(tmp_path / "g" / "img[12].png"))] == ["img1.png", "img2.png"]
    with pytest.raises(YolocamError, match="glob matched no files"):
        resolve_source(str(tmp_path / "g" / "img[89].png"))


def test_cli_explains_paths_with_brackets(scene, tmp_path, capsys):
    a = write(tmp_path / "scene[1].png", scene)
    write(tmp_path / "set[a]" / "x.png", scene)
    rc = main(["explain", str(a), str(tmp_path / "set[a]"), "--imgsz", "160", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 0, err
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert [img["path"] for img in manifest["images"]] == [str(a), str(tmp_path / "set[a]" / "x.png")]


# ------------------------------------------------------------------ arrays of other dtypes and ranges
def test_array_rules(image):
    f32 = image.astype(np.float32)
    np.testing.assert_array_equal(to_bgr_uint8(f32), image)  # 0..255 floats, as ultralytics' predictor reads them
    np.testing.assert_array_equal(to_bgr_uint8(f32 / 255.0), image)  # 0..1 floats, as OpenCV writes them
    np.testing.assert_array_equal(to_bgr_uint8(image.astype(np.float64) / 255.0), image)
    np.testing.assert_array_equal(to_bgr_uint8(image.astype(np.uint16) * 257), image)  # 16 bits: the high byte
    np.testing.assert_array_equal(to_bgr_uint8(image.astype(np.int64)), image)  # whole numbers in 0..255
    np.testing.assert_array_equal(to_bgr_uint8(np.zeros((4, 4, 3), np.uint16)), np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(YolocamError, match=r"uint16.*only up to \d+.*astype\(np.uint8\)"):
        to_bgr_uint8(image.astype(np.uint16))  # 8-bit values in a 16-bit array would come out black
    with pytest.raises(YolocamError, match=r"float32.*-1.*\[0, 255\]"):
        to_bgr_uint8(f32 - 1.0)
    with pytest.raises(YolocamError, match=r"float32.*300.*\[0, 255\]"):
        to_bgr_uint8(f32 * 1.25)  # max 240 -> 300
    with pytest.raises(YolocamError, match=r"int64.*256"):
        to_bgr_uint8(image.astype(np.int64) + 16)  # max 240 -> 256
    with pytest.raises(YolocamError, match="NaN"):
        to_bgr_uint8(np.full((4, 4, 3), np.nan, np.float32))
    with pytest.raises(YolocamError, match="bool"):
        to_bgr_uint8(np.ones((4, 4, 3), bool))
    with pytest.raises(YolocamError, match=r"\(3, 40, 50\).*channels first"):
        to_bgr_uint8(np.zeros((3, 40, 50), np.uint8))


def test_float_and_uint16_arrays_give_the_uint8_detections(demo):
    image = make_scene(0, size=(240, 320)).image
    ref = demo.explain(image)[0].detections
    assert len(ref) >= 3
    for variant in (image.astype(np.float32), image.astype(np.float32) / 255, image.astype(np.uint16) * 257):
        got = demo.explain(variant)[0].detections
        assert [d.box for d in got] == [d.box for d in ref]
    with pytest.raises(YolocamError, match="uint16"):
        demo.explain(image.astype(np.uint16))


# ------------------------------------------------------------------ folders
def test_dangling_symlinks_in_a_folder_are_reported(v8_model, image, tmp_path):
    folder = tmp_path / "imgs"
    write(folder / "a.png", image)
    os.symlink(tmp_path / "gone.png", folder / "b.png")
    results = yolocam.Explainer(v8_model, imgsz=IMGSZ).explain(str(folder), conf=0.3, max_det=2)
    assert [Path(r.path).name for r in results] == ["a.png", "b.png"]
    assert results[0].error is None
    assert "broken symbolic link" in results[1].error and "gone.png" in results[1].error


def test_cli_records_a_dangling_symlink_in_the_manifest(image, tmp_path, capsys):
    folder = tmp_path / "imgs"
    write(folder / "a.png", image)
    os.symlink(tmp_path / "gone.png", folder / "b.png")
    rc = main(["explain", str(folder), "--imgsz", "96", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 0, err
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert [e["path"] for e in manifest["errors"]] == [str(folder / "b.png")]
    assert "broken symbolic link" in manifest["errors"][0]["error"]
    assert "b.png" in err


def test_sub_folders_are_counted_and_included_on_request(scene, tmp_path, caplog):
    top = tmp_path / "data"
    write(top / "a.png", scene)
    write(top / "x" / "b.png", scene)
    write(top / "x" / "y" / "c.jpg", scene)
    (top / "x" / "notes.txt").write_text("not an image")
    with caplog.at_level(logging.WARNING, logger="yolocam"):
        assert resolve_source(str(top)) == [str(top / "a.png")]
    [record] = [r for r in caplog.records if r.name.startswith("yolocam")]
    assert "2 images in sub-folders" in record.getMessage() and "recursive" in record.getMessage()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="yolocam"):
        found = resolve_source(str(top), recursive=True)
    assert found == [str(top / "a.png"), str(top / "x" / "b.png"), str(top / "x" / "y" / "c.jpg")]
    assert not caplog.records
    only_nested = tmp_path / "nested"
    write(only_nested / "d" / "e.png", scene)
    with pytest.raises(YolocamError, match="1 image in its sub-folders.*recursive"):
        resolve_source(str(only_nested))


def test_cli_recursive(scene, tmp_path, capsys):
    top = tmp_path / "data"
    write(top / "a.png", scene)
    write(top / "x" / "b.png", scene)
    rc = main(["explain", str(top), "--imgsz", "96", "--out", str(tmp_path / "o1")])
    err = capsys.readouterr().err
    assert rc == 0 and "1 image in sub-folders" in err and "--recursive" in err, err
    rc = main(["explain", str(top), "--recursive", "--imgsz", "96", "--out", str(tmp_path / "o2")])
    assert rc == 0
    manifest = json.loads((tmp_path / "o2" / "manifest.json").read_text())
    assert [img["path"] for img in manifest["images"]] == [str(top / "a.png"), str(top / "x" / "b.png")]


# ------------------------------------------------------------------ names
def test_safe_name_keeps_readable_unicode():
    assert safe_name("日本") == "日本"
    assert safe_name("Ελλάδα") == "Ελλάδα"
    assert safe_name("हिन्दी") == "हिन्दी"  # combining marks are part of the word
    assert safe_name(unicodedata.normalize("NFD", "café")) == "café"  # one spelling (NFC) for both forms
    assert safe_name("a b/c:d") == "a_b_c_d"
    assert safe_name("..") == "x" and safe_name("😀") == "x"
    assert len(safe_name("長" * 300).encode()) <= 200


def test_non_ascii_file_names_give_readable_stems(image, tmp_path, capsys):
    folder = tmp_path / "imgs"
    for name in ("日本.png", "Ελλάδα.png", "Россия.png"):
        write(folder / name, image)
    rc = main(["explain", str(folder), "--imgsz", "96", "--out", str(tmp_path / "o")])
    assert rc == 0, capsys.readouterr().err
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text(encoding="utf-8"))
    assert sorted(img["stem"] for img in manifest["images"]) == sorted(["日本", "Ελλάδα", "Россия"])
    for img in manifest["images"]:
        assert (tmp_path / "o" / img["heatmaps"]).is_file()
