"""Video, stream, webcam, screen and URL sources, read through ultralytics' own loaders.

`media_kind` tells a source `YOLO.predict` takes besides images (today's image path keeps image files,
folders, globs and arrays); `open_media` opens one with `ultralytics.data.build.load_inference_source`
(`LoadImagesAndVideos`, `LoadStreams`, `LoadScreenshots`) and yields its frames one at a time as
`FrameItem`s, so a long video costs a few frames of memory. URLs are fetched here rather than by
ultralytics (which downloads into the working folder): an image URL is read into memory, a video URL
is copied into a temporary folder given by the caller (inside the output folder) and removed after.
Nothing is ever pip-installed: a source that needs a missing package (`screen`: mss, YouTube:
pytubefix) is refused in one line.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import shutil
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator
from urllib.parse import unquote, urlsplit

import numpy as np

from ..errors import YolocamError
from .images import ImageItem

URL_PREFIXES = ("http://", "https://")
STREAM_PREFIXES = ("rtsp://", "rtmp://", "tcp://")
YOUTUBE_HOSTS = ("www.youtube.com", "youtube.com", "youtu.be", "m.youtube.com")
LIST_SUFFIXES = (".txt", ".csv")
URL_TIMEOUT = 10.0  # seconds to connect to / read from a URL
MAX_URL_IMAGE_BYTES = 512 * 2**20  # an image URL larger than this is refused (it is read into memory)
_CHUNK = 1 << 20

log = logging.getLogger("yolocam")


# ultralytics' image and video suffixes (`ultralytics.data.utils.IMG_FORMATS`, `VID_FORMATS`), as its loaders
# classify files; listed here so that telling a source's kind imports no torch (a typo is answered at once);
# tests/test_fast_errors.py checks them against ultralytics'.
IMG_FORMATS = frozenset({"avif", "bmp", "dng", "heic", "heif", "jp2", "jpeg", "jpg", "mpo", "png", "tif", "tiff",
                         "webp"})
VID_FORMATS = frozenset({"asf", "avi", "gif", "m4v", "mkv", "mov", "mp4", "mpeg", "mpg", "ts", "webm", "wmv"})


def _formats() -> tuple[frozenset, frozenset]:
    """ultralytics' image and video suffixes (without dots), as its loaders classify files."""
    return IMG_FORMATS, VID_FORMATS


def is_url(source) -> bool:
    return isinstance(source, str) and source.lower().startswith(URL_PREFIXES)


def url_suffix(url: str) -> str:
    """The lower-case suffix (no dot) of a URL's path, '' when it has none."""
    name = unquote(urlsplit(url).path).rsplit("/", 1)[-1]
    return name.rpartition(".")[-1].lower() if "." in name else ""


def media_kind(source) -> str | None:
    """What a source is when it is not for the image path: `video` (a video file), `list` (.txt/.csv of
    sources), `streams` (.streams file), `stream` (rtsp/rtmp/tcp, or an http URL without a media suffix),
    `webcam` (an index like 0), `screen`, `youtube`, `image-url`, `video-url`; None for image files,
    folders, globs and arrays (the image path)."""
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    if not isinstance(source, str):
        return None
    low = source.strip().lower()
    if low.startswith(STREAM_PREFIXES):
        return "stream"
    if is_url(low):
        if (urlsplit(low).hostname or "") in YOUTUBE_HOSTS:
            return "youtube"
        images, videos = _formats()
        suffix = url_suffix(low)
        return "image-url" if suffix in images else "video-url" if suffix in videos else "stream"
    if source.strip().isdigit():
        return "webcam"
    if low == "screen" or (low.startswith("screen ") and not os.path.lexists(source)):
        return "screen"
    if low.endswith(".streams"):
        return "streams"
    suffix = Path(source).suffix.lower()
    if suffix in LIST_SUFFIXES and os.path.isfile(source):
        return "list"
    if suffix[1:] in _formats()[1] and not any(ch in source for ch in "*?["):
        return "video"
    return None


def has_media(source) -> bool:
    """True when `source` (one item or a list) holds anything but image files, folders, globs and arrays."""
    items = source if isinstance(source, (list, tuple)) else [source]
    return any(media_kind(s) is not None for s in items)


def stem_hint(source: str) -> str:
    """A name for a source's output folder and video: the file's stem, the URL's last path part, `webcam0`."""
    if source.strip().isdigit():
        return f"webcam{int(source)}"
    if is_url(source) or source.lower().startswith(STREAM_PREFIXES):
        parts = urlsplit(source)
        name = unquote(parts.path).rstrip("/").rsplit("/", 1)[-1].rpartition(".")
        return (name[0] or name[2] or parts.hostname or "stream").replace(".", "_")
    if source.lower().startswith("screen"):
        return "screen"
    return Path(source).stem.replace(".", "_") or "video"


# --------------------------------------------------------------------------- URLs
def _open_url(url: str, method: str = "GET"):
    request = urllib.request.Request(url, method=method, headers={"User-Agent": "yolocam"})
    try:
        return urllib.request.urlopen(request, timeout=URL_TIMEOUT)  # noqa: S310 - the user's own URL
    except urllib.error.HTTPError as exc:
        raise YolocamError(f"cannot fetch {url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise YolocamError(f"cannot fetch {url}: {reason} (expected a reachable image or video URL)") from None


def fetch_bytes(url: str, limit: int = MAX_URL_IMAGE_BYTES) -> bytes:
    """The body of `url` (at most `limit` bytes, else a YolocamError)."""
    with _open_url(url) as response:
        data = response.read(limit + 1)
    if len(data) > limit:
        raise YolocamError(f"{url}: more than {limit} bytes; an image URL is read into memory, so it is refused "
                           "(download it and pass the file)")
    return data


def load_url_image(url: str) -> np.ndarray:
    """An image URL decoded as a BGR uint8 (H, W, 3) array, as `images.load_image` decodes files."""
    from .images import _decode, to_bgr_uint8

    data = np.frombuffer(fetch_bytes(url), np.uint8)
    image = _decode(Path(unquote(urlsplit(url).path) or "image"), data) if data.size else None
    if image is None or image.size == 0:
        raise YolocamError(f"cannot decode image (corrupt or not an image): {url}")
    return to_bgr_uint8(image, what=url)


def url_content_type(url: str) -> str:
    """The Content-Type `url` answers with ('' when none): an http URL without a media suffix is an image
    when it returns image/*, else a stream (as ultralytics decides)."""
    with _open_url(url) as response:
        return response.headers.get("Content-Type", "") or ""


def download_video(url: str, folder: Path) -> Path:
    """Copy a video URL into `folder` (created by the caller, inside the output folder), chunk by chunk."""
    name = unquote(urlsplit(url).path).rsplit("/", 1)[-1] or "video.mp4"
    from .._text import safe_name

    path = Path(folder) / safe_name(name)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    with _open_url(url) as response, os.fdopen(os.open(path, flags, 0o600), "wb") as fh:
        shutil.copyfileobj(response, fh, _CHUNK)
    return path


# --------------------------------------------------------------------------- frames
@dataclass
class FrameItem(ImageItem):
    """One decoded frame: `path` (the video file, stream or webcam it came from), its `frame` number in that
    source's sequence (video files: the position in the file, 0-based), and the user's `source` argument."""

    frame: int | None = None
    source: str | None = None


@dataclass
class MediaInfo:
    """What the writer needs of one video or stream: its display `path`, frames per second (after
    `vid_stride`), the expected number of frames (None for live sources), its size (W, H) once known."""

    path: str
    source: str
    kind: str
    fps: float = 30.0
    vid_stride: int = 1
    frames: int | None = None
    extra: dict = field(default_factory=dict)


@contextlib.contextmanager
def quiet_native_stderr():
    """Silence what OpenCV and FFmpeg print from C (camera probing, connection errors) while a source
    opens: the failure is reported once, as a YolocamError. Python's own stderr is restored after."""
    import cv2

    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    saved = None
    with contextlib.suppress(OSError, ValueError, AttributeError):
        sys.stderr.flush()
        saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
    try:
        yield
    finally:
        if saved is not None:
            os.dup2(saved, 2)
            os.close(saved)
        cv2.utils.logging.setLogLevel(level)


def require_package(module: str, what: str, extra: str) -> None:
    """Refuse in one line when `module` is missing (ultralytics would try to pip-install it)."""
    if importlib.util.find_spec(module) is None:
        raise YolocamError(f"{what} needs the Python package {module!r}, which is not installed (pip install "
                           f"{extra}); yolocam never installs packages itself")


class MediaSource:
    """One opened video/stream source: iterate for `FrameItem`s (or plain `ImageItem`s for the images of a
    .txt list); `infos` maps each frame path to its `MediaInfo`; `total` is the frames (and list images)
    expected, None for live sources. Close it (or use it as a context manager) to release captures."""

    def __init__(self, source: str, kind: str, vid_stride: int = 1, buffer: bool = False,
                 download_dir: Path | None = None):
        self.source, self.kind, self.vid_stride, self.buffer = source, kind, int(vid_stride), buffer
        self.infos: dict[str, MediaInfo] = {}
        self._aliases: dict[str, str] = {}  # loader path -> the path recorded (the URL, the name as given)
        self._download: Path | None = None
        self.dataset = None
        self.total: int | None = None
        self._open(download_dir)

    def __enter__(self) -> "MediaSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.dataset is not None:
            with contextlib.suppress(Exception):
                self.dataset.close()
        if self._download is not None:
            shutil.rmtree(self._download, ignore_errors=True)
            self._download = None

    # ----------------------------------------------------------------- opening
    def _open(self, download_dir: Path | None) -> None:
        from ultralytics.data.build import load_inference_source
        from ultralytics.data.loaders import LoadStreams

        src, kind = self.source, self.kind
        if kind == "screen":
            require_package("mss", "the screen source", "mss")
        if kind == "youtube":
            require_package("pytubefix", "a YouTube source", "pytubefix")
        if kind == "video" and not os.path.isfile(src):
            raise YolocamError(f"video not found: {src}" if not os.path.lexists(src) else f"not a file: {src}")
        if kind == "stream" and is_url(src):  # an http URL without a media suffix: an image, or a stream
            if url_content_type(src).lower().startswith("image/"):
                raise _ImageURL()
        loader_source = src
        if kind == "video-url":
            if download_dir is None:
                raise YolocamError(f"a video URL is copied into the output folder before it is read: {src}")
            self._download = Path(download_dir)
            self._download.mkdir(parents=True, exist_ok=True)
            loader_source = str(download_video(src, self._download))
            self._aliases[str(Path(loader_source).absolute())] = src
        elif kind == "video":
            self._aliases[str(Path(src).absolute())] = src
        try:
            with quiet_native_stderr(), _ultralytics_quiet():
                if kind in ("stream", "youtube", "webcam"):
                    self.dataset = LoadStreams(src, vid_stride=self.vid_stride, buffer=self.buffer)
                else:  # video files, lists, .streams files and the screen, as ultralytics routes them
                    self.dataset = load_inference_source(loader_source, batch=1, vid_stride=self.vid_stride,
                                                         buffer=self.buffer)
        except (FileNotFoundError, ConnectionError, OSError, NotImplementedError, ImportError, RuntimeError,
                AssertionError, ValueError, TypeError) as exc:
            self.close()
            raise YolocamError(self._open_error(exc)) from None
        self._describe()

    def _open_error(self, exc: Exception) -> str:
        src, kind = self.source, self.kind
        if kind == "webcam":
            return f"webcam {int(src)} cannot be opened (no camera at index {int(src)} on this machine, or it is in use)"
        if kind in ("stream", "youtube", "streams"):  # ultralytics' own text repeats the address: not shown
            detail = "" if isinstance(exc, ConnectionError) else f": {' '.join(str(exc).split())}"
            return f"stream cannot be opened: {src} (unreachable, or not a video stream){detail}"
        if kind == "screen":
            return f"screen capture cannot start: {' '.join(str(exc).split())}"
        if kind == "list":
            return f"source list {src}: {' '.join(str(exc).split())}"
        return f"cannot open video {src} (corrupt, or a format OpenCV cannot decode): {' '.join(str(exc).split())}"

    def _describe(self) -> None:
        """`infos` and `total` from the opened loader (frame counts as OpenCV reports them)."""
        import cv2

        ds, stride = self.dataset, self.vid_stride
        if self.kind in ("stream", "youtube", "webcam", "streams"):
            for i, s in enumerate(self._stream_names()):
                frames = ds.frames[i]
                live = not self.buffer or frames == float("inf") or self.kind == "webcam"  # frames are dropped
                n = None if live else -(-int(frames) // stride)
                self.infos[s] = MediaInfo(s, self.source, self.kind, float(ds.fps[i]) / stride, stride, n)
            self.total = None if any(i.frames is None for i in self.infos.values()) else \
                sum(i.frames for i in self.infos.values())
            return
        if self.kind == "screen":
            self.infos["screen"] = MediaInfo("screen", self.source, "screen", 1.0, 1, None)
            return
        total: int | None = 0
        for path, is_video in zip(ds.files, ds.video_flag):
            if not is_video:
                total = None if total is None else total + 1
                continue
            cap = cv2.VideoCapture(path)
            fps, count = cap.get(cv2.CAP_PROP_FPS), int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
            cap.release()
            shown = self._aliases.get(path, path)
            fps = fps if 0 < fps < 1000 else 30.0
            n = -(-count // stride) if count > 0 else None  # some containers do not tell
            self.infos[shown] = MediaInfo(shown, self.source, "video", fps / stride, stride, n)
            total = None if total is None or n is None else total + n
        self.total = total

    def _stream_names(self) -> list[str]:
        if self.kind != "streams":
            return [self.source]
        with open(self.source, encoding="utf-8-sig") as fh:
            return fh.read().split()

    # ----------------------------------------------------------------- frames
    def __iter__(self) -> Iterator[ImageItem]:
        ds, stride = self.dataset, self.vid_stride
        if self.kind in ("stream", "youtube", "webcam", "streams"):
            names = self._stream_names()
            for k, (_, images, _) in enumerate(ds):
                for name, image in zip(names, images):
                    yield FrameItem(name, _bgr(image), frame=k * stride if self.buffer else k, source=self.source)
            return
        if self.kind == "screen":
            for k, (_, images, _) in enumerate(ds):
                yield FrameItem("screen", _bgr(images[0]), frame=k, source=self.source)
            return
        for paths, images, _ in ds:
            for path, image in zip(paths, images):
                if ds.mode == "image":
                    yield ImageItem(path, _bgr(image))
                    continue
                shown = self._aliases.get(path, path)
                yield FrameItem(shown, _bgr(image), frame=ds.frame * stride - 1, source=self.source)


def _bgr(image: np.ndarray) -> np.ndarray:
    from .images import to_bgr_uint8

    return to_bgr_uint8(image, what="frame")


class _ImageURL(Exception):
    """Raised while opening an http URL that answers with an image: it belongs to the image path."""


@contextlib.contextmanager
def _ultralytics_quiet():
    """ultralytics' loaders log their progress ('1/1: 0... Success'): not shown (yolocam has its own)."""
    try:
        from ultralytics.utils import LOGGER
    except Exception:  # noqa: BLE001
        yield
        return
    level = LOGGER.level
    LOGGER.setLevel(logging.ERROR)
    try:
        yield
    finally:
        LOGGER.setLevel(level)


def open_media(source: str, kind: str | None = None, vid_stride: int = 1, buffer: bool = False,
               download_dir: Path | None = None) -> MediaSource | None:
    """Open `source` (its `media_kind`, unless given) for reading frames; None for an http URL that turned out
    to be an image (it goes to the image path)."""
    if not isinstance(vid_stride, int) or isinstance(vid_stride, bool) or vid_stride < 1:
        raise YolocamError(f"vid_stride: expected a positive integer, got {vid_stride!r}")
    kind = kind or media_kind(source)
    if kind is None or kind == "image-url":
        raise YolocamError(f"not a video or stream source: {source}")
    try:
        return MediaSource(str(source), kind, vid_stride=vid_stride, buffer=buffer, download_dir=download_dir)
    except _ImageURL:
        return None
