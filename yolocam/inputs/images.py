"""Image input at the edge: load files, check arrays, resolve sources, letterbox.

Everything here works on numpy BGR uint8 arrays; tensors start in the adapter.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence, Union

import cv2
import numpy as np

from ..errors import YolocamError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".dng", ".mpo", ".pfm")

Source = Union[str, os.PathLike, np.ndarray, Sequence[Union[str, os.PathLike, np.ndarray]]]


def to_bgr_uint8(image: np.ndarray, what: str = "image") -> np.ndarray:
    """Return `image` as a contiguous BGR uint8 (H, W, 3) array.

    Accepts grayscale (H, W) or (H, W, 1), BGRA (H, W, 4), and 16-bit or float images
    (16-bit scaled by 1/257, float in [0, 1] scaled by 255). Anything else raises.
    """
    if not isinstance(image, np.ndarray):
        raise YolocamError(f"{what}: expected a numpy array, got {type(image).__name__}")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4) or image.shape[0] < 1 or image.shape[1] < 1:
        raise YolocamError(f"{what}: expected an (H, W, 3) BGR array, got shape {tuple(image.shape)}")
    if image.dtype == np.uint16:
        image = (image.astype(np.float32) / 257.0).round().astype(np.uint8)
    elif image.dtype in (np.float16, np.float32, np.float64):
        if not np.isfinite(image).all():
            raise YolocamError(f"{what}: float image contains NaN or infinity")
        image = (np.clip(image, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    elif image.dtype != np.uint8:
        raise YolocamError(f"{what}: expected dtype uint8, uint16 or float, got {image.dtype}")
    if image.shape[2] == 1:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return np.ascontiguousarray(image)


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as BGR uint8 (H, W, 3); raise YolocamError naming the path if unusable."""
    p = Path(path)
    if not p.exists():
        raise YolocamError(f"image not found: {p}")
    if not p.is_file():
        raise YolocamError(f"not a file: {p}")
    data = np.fromfile(str(p), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise YolocamError(f"cannot decode image (corrupt or not an image): {p}")
    return to_bgr_uint8(image, what=str(p))


@dataclass
class ImageItem:
    """One input: a path (None for arrays) and either the image or the error that loading raised."""

    path: str | None
    image: np.ndarray | None = None
    error: str | None = None


def _expand_path(p: str) -> list[str]:
    if any(ch in p for ch in "*?["):
        found = sorted(glob.glob(p, recursive=True))
        files = [f for f in found if Path(f).is_file()]
        if not files:
            raise YolocamError(f"glob matched no files: {p}")
        return files
    path = Path(p)
    if path.is_dir():
        return sorted(str(f) for f in path.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
    return [p]


def resolve_source(source: Source) -> list[str | np.ndarray]:
    """Flatten a source into a list of file paths and arrays, in order.

    A source is a path, a directory (its image files, sorted), a glob, an array, or a list of those.
    """
    if source is None:
        raise YolocamError("no source given: expected an image path, directory, glob or BGR array")
    items = source if isinstance(source, (list, tuple)) else [source]
    out: list[str | np.ndarray] = []
    for item in items:
        if isinstance(item, np.ndarray):
            out.append(item)
        elif isinstance(item, (str, os.PathLike)):
            out.extend(_expand_path(os.fspath(item)))
        else:
            raise YolocamError(f"unsupported source item: expected path or numpy array, got {type(item).__name__}")
    return out


def iter_images(entries: Iterable[str | np.ndarray | ImageItem]) -> Iterator[ImageItem]:
    """Load each entry; a bad file yields an ImageItem with `.error` set instead of raising.

    Entries that are already `ImageItem`s (e.g. decoded ahead on another thread) pass through.
    """
    for i, entry in enumerate(entries):
        if isinstance(entry, ImageItem):
            yield entry
            continue
        if isinstance(entry, np.ndarray):
            try:
                yield ImageItem(None, to_bgr_uint8(entry, what=f"array #{i}"))
            except YolocamError as exc:
                yield ImageItem(None, error=str(exc))
            continue
        try:
            yield ImageItem(str(entry), load_image(entry))
        except YolocamError as exc:
            yield ImageItem(str(entry), error=str(exc))


@dataclass(frozen=True)
class Letterbox:
    """How an original (h0, w0) image maps into the model input: resize by `gain`, pad by `top`/`left`.

    `new_unpad` is the resized size (w, h) before padding; `shape` is the padded (h, w).
    """

    orig_shape: tuple[int, int]
    shape: tuple[int, int]
    new_unpad: tuple[int, int]
    top: int
    left: int

    @property
    def gain_xy(self) -> tuple[float, float]:
        return self.new_unpad[0] / self.orig_shape[1], self.new_unpad[1] / self.orig_shape[0]


def letterbox_params(orig_shape: tuple[int, int], imgsz: int, stride: int, auto: bool = True) -> Letterbox:
    """Letterbox geometry as ultralytics' predictor computes it (minimal rectangle when `auto`)."""
    h0, w0 = orig_shape
    r = min(imgsz / h0, imgsz / w0)
    new_w, new_h = max(round(w0 * r), 1), max(round(h0 * r), 1)
    dw, dh = imgsz - new_w, imgsz - new_h
    if auto:
        dw, dh = dw % stride, dh % stride
    dw, dh = dw / 2, dh / 2
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    return Letterbox((h0, w0), (new_h + top + bottom, new_w + left + right), (new_w, new_h), top, left)


def apply_letterbox(image: np.ndarray, lb: Letterbox, pad_value: int = 114) -> np.ndarray:
    """Resize and pad a BGR image to `lb.shape` (H, W, 3)."""
    if (image.shape[1], image.shape[0]) != lb.new_unpad:
        image = cv2.resize(image, lb.new_unpad, interpolation=cv2.INTER_LINEAR)
    h, w = lb.shape
    bottom = h - lb.top - image.shape[0]
    right = w - lb.left - image.shape[1]
    return cv2.copyMakeBorder(image, lb.top, bottom, lb.left, right, cv2.BORDER_CONSTANT, value=(pad_value,) * 3)
