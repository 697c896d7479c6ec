"""Image input at the edge: load files, check arrays, resolve sources, letterbox.

Everything here works on numpy BGR uint8 arrays; tensors start in the adapter.
"""

from __future__ import annotations

import glob
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence, Union

import cv2
import numpy as np

from ..errors import YolocamError
from . import limits
from .limits import DEFAULT_MAX_IMAGE_PIXELS, image_size, open_unchecked, opencv_max_pixels

log = logging.getLogger("yolocam")

# Pixels (width x height) of the largest image decoded or array taken; None = no limit (as Pillow's
# attribute). The environment variable YOLOCAM_MAX_IMAGE_PIXELS overrides it (`limits.py`, which says why 200 MP).
MAX_IMAGE_PIXELS: int | None = DEFAULT_MAX_IMAGE_PIXELS


def check_pixels(width: int, height: int, what: str) -> None:
    """A `YolocamError` ("image too large") when a `width` x `height` image is over the limit in force
    (`MAX_IMAGE_PIXELS` here, or `YOLOCAM_MAX_IMAGE_PIXELS`)."""
    limits.check_pixels(width, height, what, MAX_IMAGE_PIXELS)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".dng", ".mpo", ".pfm")

Source = Union[str, os.PathLike, np.ndarray, Sequence[Union[str, os.PathLike, np.ndarray]]]


def to_bgr_uint8(image: np.ndarray, what: str = "image") -> np.ndarray:
    """Return `image` as a contiguous BGR uint8 (H, W, 3) array.

    Shapes: (H, W) or (H, W, 1) grayscale, (H, W, 3) BGR, (H, W, 4) BGRA (alpha dropped); at most
    `MAX_IMAGE_PIXELS` pixels (`limits.py`). Values are
    converted to 8 bits (rounded) or refused with a `YolocamError`, never clipped:

    - uint8: as is;
    - uint16: the 16-bit range 0..65535, reduced to its high byte as OpenCV's `imread` and
      ultralytics do; an array holding only 1..255 (8-bit data in a 16-bit array, which would come
      out black) is refused;
    - float: 0..1 (OpenCV's float images) when the maximum is at most 1, else 0..255 (what
      ultralytics' predictor assumes for every array); NaN, infinity or values outside [0, 255] are
      refused;
    - other integer types: whole numbers in 0..255 (anything else is refused).
    """
    if not isinstance(image, np.ndarray):
        raise YolocamError(f"{what}: expected a numpy array, got {type(image).__name__}")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4) or image.shape[0] < 1 or image.shape[1] < 1:
        hint = ""
        if image.ndim == 3 and image.shape[0] in (1, 3, 4) and image.shape[2] not in (1, 3, 4):
            hint = " (this looks like channels first: pass image.transpose(1, 2, 0))"
        raise YolocamError(f"{what}: expected an (H, W, 3) BGR array (or (H, W) / (H, W, 1) gray, (H, W, 4) BGRA), "
                           f"got shape {tuple(image.shape)}{hint}")
    check_pixels(image.shape[1], image.shape[0], what)  # before any conversion allocates
    image = _to_uint8(image, what)
    if image.shape[2] == 1:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return np.ascontiguousarray(image)


def _to_uint8(image: np.ndarray, what: str) -> np.ndarray:
    """The value rules of `to_bgr_uint8`."""
    kind, dtype = image.dtype.kind, image.dtype
    if dtype == np.uint8:
        return image
    if kind == "f":
        if not np.isfinite(image).all():
            raise YolocamError(f"{what}: {dtype} image contains NaN or infinity")
        lo, hi = float(image.min()), float(image.max())
        if lo < 0.0 or hi > 255.0:
            raise YolocamError(f"{what}: {dtype} image has values in [{lo:g}, {hi:g}]; expected [0, 1] (OpenCV) "
                               f"or [0, 255] (ultralytics), nothing outside [0, 255]")
        scale = 255.0 if hi <= 1.0 else 1.0
        return np.rint(image.astype(np.float64 if dtype == np.float64 else np.float32) * scale).astype(np.uint8)
    if dtype == np.uint16:
        hi = int(image.max())
        if 0 < hi <= 255:
            raise YolocamError(f"{what}: uint16 image holds values only up to {hi}; 16-bit images are read as "
                               f"0..65535 (as OpenCV and ultralytics do), so this one would come out black: for "
                               f"8-bit data in a 16-bit array pass image.astype(np.uint8)")
        return (image >> 8).astype(np.uint8)
    if kind in "iu":
        lo, hi = int(image.min()), int(image.max())
        if lo < 0 or hi > 255:
            raise YolocamError(f"{what}: {dtype} image has values in [{lo}, {hi}]; expected 0..255 for this "
                               f"dtype (or pass uint8, uint16 0..65535, or float 0..1 / 0..255)")
        return image.astype(np.uint8)
    raise YolocamError(f"{what}: expected dtype uint8, uint16, another integer type or float, got {dtype}")


# Suffixes that ultralytics' reader decodes with Pillow (EXIF-transposed) rather than OpenCV.
_PIL_SUFFIXES = (".avif", ".heic", ".heif")


def _decode(path: Path, data: np.ndarray) -> np.ndarray | None:
    """Decode like ultralytics' predictor reads a file (`imread(path, cv2.IMREAD_COLOR)`).

    OpenCV's colour decode (EXIF orientation applied, 8 bits, 3 channels); for a colour TIFF its
    first page as stored; Pillow (EXIF-transposed) for AVIF/HEIC; 16 bits reduced to the high byte.
    """
    suffix = path.suffix.lower()
    image = None
    if suffix in (".tif", ".tiff"):
        try:
            ok, pages = cv2.imdecodemulti(data, cv2.IMREAD_UNCHANGED)
        except cv2.error:
            ok, pages = False, []
        if ok and pages and pages[0].ndim == 3:
            image = pages[0][..., :3]
    if image is None and suffix in _PIL_SUFFIXES:
        image = _decode_pil(path)
    if image is None:
        try:
            image = cv2.imdecode(data, cv2.IMREAD_COLOR)
        except cv2.error:
            image = None
    if image is not None and image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    return image


def _decode_pil(path: Path) -> np.ndarray | None:
    """Pillow's decode, EXIF-transposed: BGR, or gray (H, W) (`to_bgr_uint8` turns it to BGR as `convert("RGB")`
    would, with less memory; 16 bits reduced to the high byte). Pillow's pixel limit is not applied: ours was."""
    try:
        from PIL import ImageOps

        with open_unchecked(path) as im:
            if im is None:
                return None
            im = ImageOps.exif_transpose(im)
            if im.mode == "L":
                return np.asarray(im)
            if im.mode in ("I;16", "I;16L", "I;16B"):
                return (np.asarray(im).astype(np.uint16) >> 8).astype(np.uint8)
            return np.asarray(im.convert("RGB"))[..., ::-1]
    except Exception:  # noqa: BLE001 - any decoder failure is "cannot decode"
        return None


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as BGR uint8 (H, W, 3), decoded exactly as ultralytics' predictor decodes it
    (EXIF orientation applied); raise YolocamError naming the path if unusable."""
    p = Path(path)
    if p.is_symlink() and not p.exists():
        raise YolocamError(f"broken symbolic link: {p} -> {os.readlink(p)}")
    if not p.exists():
        raise YolocamError(f"image not found: {p}")
    if not p.is_file():
        raise YolocamError(f"not a file: {p}")
    size = image_size(p)  # from the header: a size over the limit is refused before decoding
    if size is not None:
        check_pixels(*size, what=str(p))
    try:
        data = np.fromfile(str(p), dtype=np.uint8)
    except OSError as exc:
        raise YolocamError(f"cannot read image {p}: {exc.strerror or exc}") from None
    image = _decode(p, data) if data.size else None
    if image is None and size is not None and size[0] * size[1] > opencv_max_pixels():
        image = _decode_pil(p)  # over OpenCV's own limit (raised by ours): Pillow decodes it
        if image is None:
            raise YolocamError(f"cannot decode image: {size[0]} x {size[1]} = {size[0] * size[1]} pixels is over "
                               f"OpenCV's limit of {opencv_max_pixels()} (set the environment variable "
                               f"OPENCV_IO_MAX_IMAGE_PIXELS before starting to raise it) and Pillow cannot "
                               f"decode it: {p}")
    if image is None or image.size == 0:
        raise YolocamError(f"cannot decode image (corrupt or not an image): {p}")
    return to_bgr_uint8(image, what=str(p))


@dataclass
class ImageItem:
    """One input: a path (None for arrays) and either the image or the error that loading raised."""

    path: str | None
    image: np.ndarray | None = None
    error: str | None = None


def _is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def _is_dangling(path: str | os.PathLike) -> bool:
    return os.path.islink(path) and not os.path.exists(path)


def _folder_images(folder: Path, recursive: bool = False) -> list[str]:
    """Image files in `folder` (sorted; with `recursive`, in its sub-folders too, by relative path).

    Dangling symbolic links with an image suffix are listed too, so that loading reports them. Without
    `recursive`, images in sub-folders are counted: a warning says how many were left out, and a folder
    with no images of its own but some below raises.
    """
    direct, nested = [], []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        here = Path(root)
        found = [str(here / f) for f in sorted(files) if _is_image_name(here / f)]
        # os.walk lists a symlink to a folder under dirs, but never a dangling link there: they are in files
        (direct if here == folder else nested).extend(found)
    if recursive:
        return direct + nested
    if nested:
        n = len(nested)
        what = f"{n} image{'s' if n != 1 else ''}"
        if not direct:
            raise YolocamError(f"no images directly in folder {folder}, but {what} in its sub-folders: pass "
                               f"recursive=True (CLI: --recursive) to include them")
        log.warning("%s in sub-folders of %s left out: pass recursive=True (CLI: --recursive) to include them",
                    what, folder)
    return direct


def _expand_path(p: str, recursive: bool = False) -> list[str]:
    path = Path(p)
    if os.path.lexists(p):  # an existing path wins over glob characters: scene[1].png, set[a]/
        return _folder_images(path, recursive) if path.is_dir() else [p]
    if any(ch in p for ch in "*?["):
        found = sorted(glob.glob(p, recursive=True))
        files = [f for f in found if Path(f).is_file() or _is_dangling(f)]
        if not files:
            raise YolocamError(f"glob matched no files: {p}")
        return files
    return [p]


def resolve_source(source: Source, recursive: bool = False) -> list[str | np.ndarray]:
    """Flatten a source into a list of file paths and arrays, in order.

    A source is a path, a directory (its image files, sorted; with `recursive`, its sub-folders'
    too), a glob, an array, or a list of those. An existing path is taken as it is even when its
    name holds glob characters (`[`, `*`, `?`).
    """
    if source is None:
        raise YolocamError("no source given: expected an image path, directory, glob or BGR array")
    items = source if isinstance(source, (list, tuple)) else [source]
    out: list[str | np.ndarray] = []
    for item in items:
        if isinstance(item, np.ndarray):
            out.append(item)
        elif isinstance(item, (str, os.PathLike)):
            out.extend(_expand_path(os.fspath(item), recursive))
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
    `crop` (classification models, `centre_crop_params`): the resized image is cut to `shape` instead of
    padded; `top` and `left` are then minus the crop's offsets.
    """

    orig_shape: tuple[int, int]
    shape: tuple[int, int]
    new_unpad: tuple[int, int]
    top: int
    left: int
    crop: bool = False

    @property
    def region(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1): the part of the original image the input shows, in its pixels (rounded): the
        whole image for a letterbox, the centre crop's rectangle for a crop."""
        (gx, gy), (h0, w0), (h, w) = self.gain_xy, self.orig_shape, self.shape
        x0, y0 = max(0, round(-self.left / gx)), max(0, round(-self.top / gy))
        return x0, y0, min(w0, round((w - self.left) / gx)), min(h0, round((h - self.top) / gy))

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


def centre_crop_params(orig_shape: tuple[int, int], imgsz: int) -> Letterbox:
    """ultralytics' classification preprocessing (`classify_transforms`: torchvision's `Resize(imgsz)` then
    `CenterCrop(imgsz)`) as a `Letterbox` with `crop`: the short side resized to `imgsz` (the long one
    truncated, as torchvision), then the centre `imgsz` x `imgsz` cut out (offsets rounded as torchvision)."""
    h0, w0 = orig_shape
    new_long = int(imgsz * max(h0, w0) / min(h0, w0))
    new_w, new_h = (imgsz, new_long) if w0 <= h0 else (new_long, imgsz)
    top, left = int(round((new_h - imgsz) / 2.0)), int(round((new_w - imgsz) / 2.0))
    return Letterbox((h0, w0), (imgsz, imgsz), (new_w, new_h), -top, -left, crop=True)


def apply_centre_crop(image: np.ndarray, lb: Letterbox) -> np.ndarray:
    """Resize with Pillow's bilinear filter (as torchvision's `Resize` on the PIL image ultralytics makes) and
    cut out the centre crop `lb` describes: (H, W, 3), channels as given."""
    from PIL import Image

    if (image.shape[1], image.shape[0]) != lb.new_unpad:
        image = np.asarray(Image.fromarray(image).resize(lb.new_unpad, Image.BILINEAR))
    h, w = lb.shape
    return np.ascontiguousarray(image[-lb.top:-lb.top + h, -lb.left:-lb.left + w])


def apply_letterbox(image: np.ndarray, lb: Letterbox, pad_value: int = 114) -> np.ndarray:
    """Resize and pad a BGR image to `lb.shape` (H, W, 3) (a `crop`: resize and cut, `apply_centre_crop`)."""
    if lb.crop:
        return apply_centre_crop(image, lb)
    if (image.shape[1], image.shape[0]) != lb.new_unpad:
        image = cv2.resize(image, lb.new_unpad, interpolation=cv2.INTER_LINEAR)
    h, w = lb.shape
    bottom = h - lb.top - image.shape[0]
    right = w - lb.left - image.shape[1]
    return cv2.copyMakeBorder(image, lb.top, bottom, lb.left, right, cv2.BORDER_CONSTANT, value=(pad_value,) * 3)


def batch_letterboxes(shapes, imgsz: int, stride: int, crop: bool = False) -> list[Letterbox]:
    """Letterbox geometry per image shape (H, W); minimal rectangles only when all shapes agree (as ultralytics).
    With `crop` (classification models): ultralytics' resize and centre crop (`centre_crop_params`)."""
    if crop:
        return [centre_crop_params(s, imgsz) for s in shapes]
    auto = len(set(shapes)) == 1
    return [letterbox_params(s, imgsz, stride, auto=auto) for s in shapes]


def images_to_tensor(images, lbs, device, dtype):
    """BGR uint8 images letterboxed by `lbs` -> (B, 3, H, W) RGB tensor in [0, 1] of `dtype` on `device`."""
    import torch  # only the model side needs torch; the loaders above stay torch-free

    arr = np.stack([apply_letterbox(im, lb) for im, lb in zip(images, lbs)])
    x = torch.from_numpy(arr).to(device).permute(0, 3, 1, 2).flip(1)
    return x.to(dtype).div(255.0).contiguous()
