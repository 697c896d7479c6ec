"""Size limits of input images, checked before anything is decoded.

`yolocam.inputs.images.MAX_IMAGE_PIXELS` (default 200 million, `None` = no limit, as Pillow's attribute of
that name) bounds the pixels of a decoded image or a passed array; the environment variable
`YOLOCAM_MAX_IMAGE_PIXELS` (a positive integer, or `none`), when set, overrides it. 200 MP admits the full-resolution photos of every
camera (the largest sensors have about 200 MP), whose decoded BGR image takes 600 MB; Pillow itself
refuses images over 179 MP. A file's size is read from its header (Pillow's format parsers, without
decoding; WebP and PFM headers here), so an image too large costs no memory.
"""

from __future__ import annotations

import contextlib
import os
import struct
import warnings
from pathlib import Path
from typing import Iterator

from ..errors import YolocamError

DEFAULT_MAX_IMAGE_PIXELS = 200_000_000  # yolocam.inputs.images.MAX_IMAGE_PIXELS starts as this
PIXELS_ENV = "YOLOCAM_MAX_IMAGE_PIXELS"
OPENCV_PIXELS_ENV = "OPENCV_IO_MAX_IMAGE_PIXELS"  # OpenCV's own decoding limit, read once by OpenCV
OPENCV_DEFAULT_PIXELS = 2**30


def max_image_pixels(configured: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> int | None:
    """The pixel limit in force: `YOLOCAM_MAX_IMAGE_PIXELS` when set, else `configured` (the value users set
    as `yolocam.inputs.images.MAX_IMAGE_PIXELS`, which `images.check_pixels` passes in)."""
    text = os.environ.get(PIXELS_ENV, "").strip()
    if not text:
        limit, what = configured, "yolocam.inputs.images.MAX_IMAGE_PIXELS"
    elif text.lower() == "none":
        return None
    else:
        limit, what = (int(text) if text.isdigit() else text), f"environment variable {PIXELS_ENV}"
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise YolocamError(f"{what}: expected a positive integer (pixels) or none (no limit), got {limit!r}")
    return limit


def opencv_max_pixels() -> int:
    """OpenCV's decoding limit (`CV_IO_MAX_IMAGE_PIXELS`: 2**30 unless its environment variable sets it)."""
    text = os.environ.get(OPENCV_PIXELS_ENV, "").strip()
    return int(text) if text.isdigit() else OPENCV_DEFAULT_PIXELS


def check_pixels(width: int, height: int, what: str, configured: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> None:
    """Raise YolocamError when a `width` x `height` image is over the pixel limit (`max_image_pixels`)."""
    limit, n = max_image_pixels(configured), int(width) * int(height)
    if limit is not None and n > limit:
        raise YolocamError(f"image too large: {width} x {height} = {n} pixels exceeds the limit of {limit} (set "
                           f"{PIXELS_ENV} or yolocam.inputs.images.MAX_IMAGE_PIXELS to raise it, none / None "
                           f"for no limit): {what}")


@contextlib.contextmanager
def open_unchecked(path: Path) -> Iterator:
    """The file opened by Pillow's format parsers (header read, nothing decoded), without Pillow's own
    decompression-bomb limit (`MAX_IMAGE_PIXELS` here applies instead); None when no parser takes it."""
    from PIL import Image

    Image.init()
    with open(path, "rb") as fp:
        prefix = fp.read(16)
        for fmt in list(Image.ID):
            factory, accept = Image.OPEN[fmt]
            ok = not accept or accept(prefix)
            if not ok or isinstance(ok, str):  # a str: "maybe", with a warning Pillow shows
                continue
            fp.seek(0)
            try:
                im = factory(fp, str(path))
            except Exception:  # noqa: BLE001 - not this format (or a corrupt header): try the next
                continue
            yield im
            return
        yield None


def image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from the file's header; None when it cannot be told without decoding."""
    try:
        with open(path, "rb") as fp:
            head = fp.read(64)
        if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
            return _webp_size(head)
        if head[:2] in (b"PF", b"Pf"):
            return _pfm_size(head)
        with warnings.catch_warnings():  # a damaged header is reported once, by the decoder's verdict
            warnings.simplefilter("ignore")
            with open_unchecked(path) as im:
                return None if im is None else tuple(im.size)
    except (OSError, ValueError, IndexError, struct.error):
        return None


def _webp_size(head: bytes) -> tuple[int, int] | None:
    """WebP: the VP8X canvas, or the VP8 / VP8L frame size (Pillow's parser would allocate the canvas)."""
    chunk = head[12:16]
    if chunk == b"VP8X":
        return 1 + int.from_bytes(head[24:27], "little"), 1 + int.from_bytes(head[27:30], "little")
    if chunk == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":
        w, h = struct.unpack("<HH", head[26:30])
        return w & 0x3FFF, h & 0x3FFF
    if chunk == b"VP8L" and head[20] == 0x2F:
        bits = int.from_bytes(head[21:25], "little")
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    return None


def _pfm_size(head: bytes) -> tuple[int, int] | None:
    """PFM: `PF` / `Pf`, then width and height as text."""
    fields = head[2:].split()
    if len(fields) < 2 or not (fields[0].isdigit() and fields[1].isdigit()):
        return None
    return int(fields[0]), int(fields[1])
