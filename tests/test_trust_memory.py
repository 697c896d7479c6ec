"""Sizes are checked before anything is allocated (issue 21, item 9): a maximum imgsz, a pixel limit for
decoded images and arrays (read from the file's header), the D-RISE masks' grid and memory, and the
numeric knobs (`memory_mb`, `max_batch`, the mask seed); each ends in one YolocamError line."""

from __future__ import annotations

import json
import math
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import yolocam
from yolocam.cam import drise
from yolocam.cam.drise import DriseConfig, MaskSource, check_masks, drise_saliency
from yolocam.cli import main
from yolocam.cli.options import imgsz_value
from yolocam.defaults import MAX_IMGSZ
from yolocam.errors import YolocamError
from yolocam.explain.checks import check_imgsz, check_memory, round_imgsz
from yolocam.inputs import images
from yolocam.inputs.images import iter_images, load_image, to_bgr_uint8
from yolocam.inputs import images as images_mod
from yolocam.inputs.limits import PIXELS_ENV, image_size, max_image_pixels

REPO = Path(__file__).resolve().parents[1]


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def gray_png(path: Path, w: int, h: int, rows: int = 64) -> Path:
    """A real w x h 8-bit gray PNG of zeros, written in well under a second and little memory: one
    compressed block of `rows` rows repeated (each ends in a full flush, so its bytes are the same every
    time), and the Adler-32 of zeros (1 + n << 16). 40000 x 40000 is 1.5 MB."""
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = b"\0" * ((w + 1) * rows)
    first = comp.compress(block) + comp.flush(zlib.Z_FULL_FLUSH)
    again = comp.compress(block) + comp.flush(zlib.Z_FULL_FLUSH)
    full, rest = divmod(h, rows)
    tail = comp.compress(b"\0" * ((w + 1) * rest)) + comp.flush()
    n = (w + 1) * h
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)))
        f.write(_chunk(b"IDAT", b"\x78\xda" + (first if full else b"")))
        for _ in range(full - 1):
            f.write(_chunk(b"IDAT", again))
        f.write(_chunk(b"IDAT", tail + struct.pack(">I", ((n % 65521) << 16) | 1)) + _chunk(b"IEND", b""))
    return path


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def big_pngs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("big")
    return {n: gray_png(folder / f"gray{n}.png", n, n) for n in (30000, 40000)}


@pytest.fixture()
def no_env_limit(monkeypatch):
    monkeypatch.delenv(PIXELS_ENV, raising=False)


def test_the_test_png_is_a_real_image(tmp_path):
    path = gray_png(tmp_path / "g.png", 301, 203)
    assert cv2.imread(str(path), cv2.IMREAD_UNCHANGED).shape == (203, 301)
    assert load_image(path).shape == (203, 301, 3) and load_image(path).max() == 0


# ------------------------------------------------------------------ imgsz
@pytest.mark.parametrize("imgsz", [100000, 20000, MAX_IMGSZ + 1])
def test_imgsz_over_the_maximum_is_refused(imgsz, capsys):
    with pytest.raises(YolocamError, match=f"imgsz: expected a positive integer of at most {MAX_IMGSZ}"):
        yolocam.Explainer(imgsz=imgsz)  # before the model is loaded
    assert main(["explain", "x.png", "--imgsz", str(imgsz)]) == 2
    assert f"at most {MAX_IMGSZ}" in one_error_line(capsys.readouterr().err)
    assert main(["bench", "--imgsz", str(imgsz)]) == 2
    assert main(["val", "--imgsz", str(imgsz)]) == 2


def test_imgsz_up_to_the_maximum_is_accepted():
    check_imgsz(MAX_IMGSZ)
    assert imgsz_value(str(MAX_IMGSZ)) == MAX_IMGSZ and imgsz_value(" 640 ") == 640
    assert round_imgsz(MAX_IMGSZ - 5, 32) == MAX_IMGSZ
    with pytest.raises(YolocamError, match="over the maximum"):  # e.g. a checkpoint's recorded size
        round_imgsz(MAX_IMGSZ + 1, 32)


# ------------------------------------------------------------------ memory_mb, max_batch
@pytest.mark.parametrize("memory_mb", [0, -5, math.nan, math.inf, -math.inf, "1024", True, None])
def test_bad_memory_mb(memory_mb):
    with pytest.raises(YolocamError, match=r"memory_mb: expected a finite positive number \(MiB\), got"):
        yolocam.Explainer(memory_mb=memory_mb)


@pytest.mark.parametrize("max_batch", [0, -1, 1.5, "4", math.nan])
def test_bad_max_batch(max_batch):
    with pytest.raises(YolocamError, match="max_batch: expected None or a positive integer"):
        check_memory(2048.0, max_batch)


def test_good_memory_values():
    for memory_mb, max_batch in ((1e-3, None), (2048, 4), (np.float32(512), np.int64(2))):
        check_memory(memory_mb, max_batch)


@pytest.mark.parametrize("value", ["0", "-5", "nan", "inf", "abc"])
def test_bench_memory_mb_one_line(value, capsys):
    assert main(["bench", "--memory-mb", value]) == 2
    assert "--memory-mb: expected a finite positive number" in one_error_line(capsys.readouterr().err)


# ------------------------------------------------------------------ decoded-image pixel limit
def test_huge_png_says_too_large_not_corrupt(big_pngs, no_env_limit):
    for n, path in big_pngs.items():
        assert path.stat().st_size < 2e6 and image_size(path) == (n, n)
        with pytest.raises(YolocamError) as err:
            load_image(path)
        msg = str(err.value)
        assert msg.startswith(f"image too large: {n} x {n} = {n * n} pixels exceeds the limit of 200000000")
        assert PIXELS_ENV in msg and "MAX_IMAGE_PIXELS" in msg and str(path) in msg and "corrupt" not in msg


def test_huge_png_in_the_cli_is_one_line(big_pngs, tmp_path, capsys, no_env_limit):
    rc = main(["explain", str(big_pngs[40000]), "--imgsz", "64", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and "corrupt" not in err
    assert [line for line in err.splitlines() if "image too large: 40000 x 40000" in line][0].startswith("yolocam: warning")


def test_refused_before_decoding_little_memory(big_pngs):
    """The 30000 x 30000 PNG (0.9 MB) took the process to 5.7 GB; now it is refused from its header."""
    code = ("import json, resource; from yolocam.inputs.images import load_image\n"
            "from yolocam.errors import YolocamError\n"
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            f"try: load_image({str(big_pngs[30000])!r}); said = ''\n"
            "except YolocamError as exc: said = str(exc)\n"
            "print(json.dumps([before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, said]))")
    env = {k: v for k, v in os.environ.items() if k != PIXELS_ENV}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env, check=True)
    before, peak, said = json.loads(out.stdout.strip().splitlines()[-1])
    assert said.startswith("image too large: 30000 x 30000")
    assert (peak - before) * 1024 < 100e6  # kB; the decoded image alone would be 2.7 GB


def test_limit_override_attribute_and_environment(tmp_path, monkeypatch, no_env_limit):
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), np.full((20, 30, 3), 7, np.uint8))
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 599)
    with pytest.raises(YolocamError, match="image too large: 30 x 20 = 600 pixels exceeds the limit of 599"):
        load_image(path)
    monkeypatch.setenv(PIXELS_ENV, "600")  # the environment variable wins over the attribute
    assert load_image(path).shape == (20, 30, 3)
    monkeypatch.setenv(PIXELS_ENV, "none")
    assert max_image_pixels(images_mod.MAX_IMAGE_PIXELS) is None and load_image(path).shape == (20, 30, 3)
    monkeypatch.delenv(PIXELS_ENV)
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", None)
    assert load_image(path).shape == (20, 30, 3)
    for bad in ("-3", "lots", "0"):
        monkeypatch.setenv(PIXELS_ENV, bad)
        with pytest.raises(YolocamError, match=f"environment variable {PIXELS_ENV}: expected a positive integer"):
            load_image(path)
    monkeypatch.delenv(PIXELS_ENV)
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 0)
    with pytest.raises(YolocamError, match="MAX_IMAGE_PIXELS: expected a positive integer"):
        load_image(path)


def test_arrays_are_checked_the_same_way(monkeypatch, no_env_limit):
    huge = np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (15000, 15000, 3))  # 225 MP, no memory
    with pytest.raises(YolocamError, match="image too large: 15000 x 15000 = 225000000 pixels"):
        to_bgr_uint8(huge, what="array #0")
    (item,) = iter_images([huge])
    assert item.image is None and item.error.startswith("image too large: 15000 x 15000")
    assert item.error.endswith(": array #0")
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 600)
    assert to_bgr_uint8(np.zeros((20, 30), np.float32)).shape == (20, 30, 3)  # at the limit
    with pytest.raises(YolocamError, match="31 x 20 = 620 pixels exceeds the limit of 600"):
        to_bgr_uint8(np.zeros((20, 31), np.float32))


def test_header_sizes_without_pillows_bomb_limit(tmp_path):
    """WebP (lossy VP8, lossless VP8L, extended VP8X), PFM and a PNG header of 400 MP (over Pillow's own
    179 MP limit): sizes read without decoding."""
    img = np.random.default_rng(0).integers(0, 255, (37, 53, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "lossy.webp"), img, [cv2.IMWRITE_WEBP_QUALITY, 80])
    cv2.imwrite(str(tmp_path / "lossless.webp"), img, [cv2.IMWRITE_WEBP_QUALITY, 101])
    from PIL import Image

    Image.fromarray(np.dstack([img, img[..., :1]])).save(tmp_path / "alpha.webp", exif=b"Exif\0\0")
    cv2.imwrite(str(tmp_path / "f.pfm"), img.astype(np.float32) / 255)
    for name in ("lossy.webp", "lossless.webp", "alpha.webp", "f.pfm"):
        assert image_size(tmp_path / name) == (53, 37), name
    assert (tmp_path / "alpha.webp").read_bytes()[12:16] == b"VP8X"
    header_only = tmp_path / "h.png"
    ihdr = _chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 0, 0, 0, 0))
    header_only.write_bytes(b"\x89PNG\r\n\x1a\n" + ihdr + _chunk(b"IDAT", b"not pixels") + _chunk(b"IEND", b""))
    assert image_size(header_only) == (20000, 20000)
    with pytest.raises(Image.DecompressionBombError):  # what Image.open would have said
        Image.open(header_only)


def test_header_probe_of_a_damaged_file_adds_no_warning(tmp_path):
    """Pillow warns on a truncated TIFF's header ("Truncated File Read"); the probe keeps quiet and the
    decoder's verdict is the one message."""
    import warnings

    cv2.imwrite(str(tmp_path / "t.tif"), np.zeros((40, 60, 3), np.uint8) + 9)
    damaged = tmp_path / "damaged.tif"
    damaged.write_bytes((tmp_path / "t.tif").read_bytes()[:-20])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert image_size(damaged) is None
        try:
            load_image(damaged)
        except YolocamError:
            pass
    assert not caught, [str(w.message) for w in caught]


def test_over_opencvs_own_limit_decodes_with_pillow(tmp_path):
    """An image under our limit but over OpenCV's (`CV_IO_MAX_IMAGE_PIXELS`, lowered here to 1000 pixels
    in a subprocess) decodes with Pillow to the same pixels; one Pillow cannot decode says why."""
    rng = np.random.default_rng(1)
    cv2.imwrite(str(tmp_path / "c.png"), rng.integers(0, 256, (40, 60, 3), dtype=np.uint8))
    cv2.imwrite(str(tmp_path / "g.png"), rng.integers(0, 256, (40, 60), dtype=np.uint8))
    cv2.imwrite(str(tmp_path / "g16.png"), rng.integers(0, 65536, (40, 60), dtype=np.uint16))
    cv2.imwrite(str(tmp_path / "c.jpg"), rng.integers(0, 256, (40, 60, 3), dtype=np.uint8))
    cv2.imwrite(str(tmp_path / "f.pfm"), rng.random((40, 60, 3), dtype=np.float32))
    names = ["c.png", "g.png", "g16.png", "c.jpg"]
    np.save(tmp_path / "ref.npy", np.stack([load_image(tmp_path / n) for n in names]))
    code = ("import sys, numpy as np; from pathlib import Path; from yolocam.inputs.images import load_image\n"
            "from yolocam.errors import YolocamError\n"
            "t = Path(sys.argv[1]); ref = np.load(t / 'ref.npy').astype(int)\n"
            f"print([int(abs(load_image(t / n) - r).max()) for n, r in zip({names!r}, ref)])\n"
            "try: load_image(t / 'f.pfm')\n"
            "except YolocamError as exc: print(exc)\n")
    env = {k: v for k, v in os.environ.items() if k != PIXELS_ENV} | {"OPENCV_IO_MAX_IMAGE_PIXELS": "1000"}
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, cwd=REPO,
                         env=env)
    assert out.returncode == 0, out.stderr
    diffs, said = out.stdout.strip().splitlines()
    assert json.loads(diffs)[:3] == [0, 0, 0] and json.loads(diffs)[3] <= 2  # PNG exact; JPEG: another libjpeg
    assert "60 x 40 = 2400 pixels is over OpenCV's limit of 1000" in said and "Pillow cannot" in said


# ------------------------------------------------------------------ D-RISE masks
def test_mask_cell_larger_than_the_input_is_refused(tmp_path, capsys):
    with pytest.raises(YolocamError, match=r"drise cell: expected at most the model input's long side \(64 pixels"):
        yolocam.Explainer(method="drise", cell=100000, imgsz=64)
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), np.zeros((48, 64, 3), np.uint8))
    rc = main(["explain", str(path), "--method", "drise", "--mask-cell", "100000", "--imgsz", "64",
               "--out", str(tmp_path / "o")])
    assert rc == 2 and "drise cell: expected at most" in one_error_line(capsys.readouterr().err)
    with pytest.raises(YolocamError, match="drise cell"):  # the engine's own check (any input size)
        drise_saliency(None, torch.zeros(3, 32, 48), torch.zeros(1, 4), torch.ones(1, 2), DriseConfig(cell=49))


def test_mask_memory_is_checked_before_allocating(monkeypatch):
    with pytest.raises(YolocamError, match=r"drise: 1000000000 masks of 17x17 cells .* need about \d+"):
        MaskSource((64, 64), DriseConfig(masks=10**9, cell=4), "cpu")  # 1.5 TB of grids: not allocated
    monkeypatch.setattr(drise, "memory_bytes", lambda device: 2**30)
    check_masks((640, 640), DriseConfig(batch=8), "cpu", targets=10)  # about 180 MB
    with pytest.raises(YolocamError, match=r"one batch of 256 masked images at input 640x640 \(300 boxes\) needs "
                                           r"about 5\.1 GiB, more than the 1\.0 GiB of cpu"):
        check_masks((640, 640), DriseConfig(batch=256), "cpu", targets=300)


def test_masks_made_in_chunks_are_the_same(monkeypatch):
    cfg = DriseConfig(masks=9, cell=12, seed=3)
    whole = MaskSource((50, 70), cfg, "cpu").masks(0, 9)
    monkeypatch.setattr(drise, "UP_CHUNK_BYTES", 1)  # one upsampled grid at a time
    assert torch.equal(MaskSource((50, 70), cfg, "cpu").masks(0, 9), whole)
    assert torch.equal(MaskSource((50, 70), cfg, "cpu").masks(4, 20), whole[4:])


@pytest.mark.parametrize("seed", [2**64, -2**63 - 1])
def test_mask_seed_out_of_range(seed):
    with pytest.raises(YolocamError, match=r"drise seed: expected an integer in \[-2\*\*63, 2\*\*64\)"):
        DriseConfig(seed=seed).check()
