"""Explaining every source `YOLO.predict` takes: videos, streams, webcams, the screen, URLs and lists, with
the image files, folders and globs beside them.

Frames are read by ultralytics' loaders (`inputs/streams.py`) on a background thread and explained one
batch at a time, so memory stays at a few frames whatever the length of the video; with `track`,
ultralytics' tracker gives each box an id (`tracks.py`). `export_source` writes a run into an output
folder (`output/video.py`): the manifest is rewritten after each frame, so an interrupted run (Ctrl-C)
leaves a valid manifest of the frames done and a playable annotated video of them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import YolocamError
from ..inputs.images import ImageItem, resolve_source
from ..inputs.streams import MediaSource, is_url, load_url_image, media_kind, open_media


class Sources:
    """The items of one run's source, opened in order: image entries (paths, arrays) for the image path and
    `MediaSource`s for videos and streams. Opening fails early, in one `YolocamError`, for a missing video,
    webcam or unreachable stream. `total`: images and frames expected (None when a source is live);
    `infos`: frame path -> `MediaInfo`. Close it (a context manager) to release captures and downloads."""

    def __init__(self, source, vid_stride: int = 1, buffer: bool = False, out_dir: Path | None = None,
                 recursive: bool = False):
        if source is None:
            raise YolocamError("no source given: expected an image, video, folder, glob, URL, stream or webcam index")
        items = list(source) if isinstance(source, (list, tuple)) else [source]
        self.parts: list = []
        self.infos: dict = {}
        self._out, self._downloads_made = out_dir, None
        try:
            for k, item in enumerate(items):
                kind = media_kind(item)
                if kind is None:
                    self.parts.append(resolve_source(item, recursive=recursive))
                elif kind == "image-url" and len(items) == 1:  # the only source: fetched now, fails in one line
                    self.parts.append([ImageItem(str(item), load_url_image(str(item)))])
                elif kind == "image-url":
                    self.parts.append([_UrlImage(str(item))])
                else:
                    media = open_media(str(item), kind, vid_stride=vid_stride, buffer=buffer,
                                       download_dir=self._downloads(k) if kind == "video-url" else None)
                    if media is None:  # an http URL that answered with an image
                        self.parts.append([_UrlImage(str(item))])
                    else:
                        self.parts.append(media)
                        self.infos.update(media.infos)
        except BaseException:
            self.close()
            raise
        totals = [len(p) if isinstance(p, list) else p.total for p in self.parts]
        self.total = None if any(t is None for t in totals) else sum(totals)
        self.has_frames = any(isinstance(p, MediaSource) for p in self.parts)

    def _downloads(self, k: int) -> Path:
        """A temporary folder for a copy of the `k`-th source (a video URL): inside the output folder when there
        is one (`.downloads.tmp<pid>-0`, which a rerun's cleanup ignores), else in the system's temporary folder."""
        from ..output.paths import checked_dir

        if self._out is None:
            self._downloads_made = self._downloads_made or Path(tempfile.mkdtemp(prefix="yolocam-download-"))
            return self._downloads_made / str(k)
        rel = f".downloads.tmp{os.getpid()}-0"
        self._downloads_made = Path(self._out) / rel
        return checked_dir(self._out, f"{rel}/{k}")

    def __enter__(self) -> "Sources":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for part in self.parts:
            if isinstance(part, MediaSource):
                part.close()
        folder, self._downloads_made = self._downloads_made, None
        if folder is not None and folder.is_dir() and not folder.is_symlink():
            shutil.rmtree(folder, ignore_errors=True)

    def __iter__(self) -> Iterator:
        """Paths and arrays (decoded by `iter_images`), `ImageItem`s of image URLs, and `FrameItem`s."""
        for part in self.parts:
            for entry in part:
                yield entry.load() if isinstance(entry, _UrlImage) else entry


class _UrlImage:
    """An image URL, fetched when its turn comes (on the decoding thread)."""

    def __init__(self, url: str):
        self.url = url

    def load(self) -> ImageItem:
        try:
            return ImageItem(self.url, load_url_image(self.url))
        except YolocamError as exc:
            return ImageItem(self.url, error=str(exc))


def iter_explanations(explainer, sources: Sources, conf: float, iou: float, classes, max_det: int, batch: int = 1,
                      track: bool = False, tracker: str = "bytetrack.yaml", resume=None) -> Iterator:
    """`ImageExplanation`s of every image and frame of `sources`, in order, frames decoded ahead on a thread;
    with `track`, each frame's boxes get ultralytics' track ids (`DetectionExplanation.track_id`). `resume`
    (a `VideoResume`): the frames an earlier run finished come back as `ResumedFrame`s, read, not explained."""
    from .pipeline import prefetch
    from ..output.tracks import TrackAssigner

    assigner = TrackAssigner(tracker) if track else None
    items = prefetch(iter(sources), depth=2 * batch + 2)
    run = dict(conf=conf, iou=iou, classes=classes, max_det=max_det, batch=batch)
    results = explainer.iter_explain(items, **run) if resume is None or not resume.kept else \
        _replaying(explainer, items, resume, run)
    for result in results:
        if assigner is not None and result.frame is not None:
            assigner.assign(result)
        yield result


def _replaying(explainer, items: Iterator, resume, run: dict) -> Iterator:
    """The items in order: the kept frames replayed (`VideoResume.replay`), the runs of items between them explained."""
    ahead: list = []  # at most one item read but not yet handed on

    def until_kept() -> Iterator:
        while ahead or _pull(items, ahead):
            if resume.wants(ahead[0]):
                return
            yield ahead.pop()

    while ahead or _pull(items, ahead):
        if resume.wants(ahead[0]):
            yield resume.replay(ahead.pop(), explainer.meta)
        else:
            yield from explainer.iter_explain(until_kept(), **run)


def _pull(items: Iterator, ahead: list) -> bool:
    for item in items:
        ahead.append(item)
        return True
    return False


def run_settings(explainer, conf: float, iou: float, classes, max_det: int) -> dict:
    """What a video's frames were explained with, beside the model and method (recorded per video; `--resume`
    continues a video only with the same)."""
    from .checks import resolve_classes

    classes = resolve_classes(classes, explainer.names)
    return {"conf": float(conf), "iou": float(iou), "classes": None if classes is None else sorted(int(c) for c in classes),
            "max_det": int(max_det), "imgsz": explainer.imgsz}


def check_vid_stride(vid_stride) -> int:
    if not isinstance(vid_stride, (int, np.integer)) or isinstance(vid_stride, bool) or vid_stride < 1:
        raise YolocamError(f"vid_stride: expected a positive integer (take every n-th frame), got {vid_stride!r}")
    return int(vid_stride)


def explain_stream(explainer, source, conf: float, iou: float, classes, max_det: int, batch: int = 1,
                   recursive: bool = False, vid_stride: int = 1, track: bool = False, tracker: str = "bytetrack.yaml",
                   stream_buffer: bool = False) -> Iterator:
    """`Explainer.explain` for videos and streams: the sources are opened now (errors raise here), the frames
    are explained as the returned generator is consumed."""
    vid_stride = check_vid_stride(vid_stride)
    if track:
        from ..output.tracks import load_tracker_config

        load_tracker_config(tracker)  # a wrong tracker fails before any source is opened
    sources = Sources(source, vid_stride=vid_stride, buffer=stream_buffer, recursive=recursive)
    if not sources.parts or sources.total == 0:
        sources.close()
        raise YolocamError(f"no images or frames found in source {source!r}")

    def run():
        with sources:
            yield from iter_explanations(explainer, sources, conf, iou, classes, max_det, batch, track, tracker)

    return run()


def export_source(explainer, source, out_dir, conf: float | None = None, iou: float = 0.7, classes=None,
                  max_det: int | None = None, batch: int = 1, recursive: bool = False, vid_stride: int = 1,
                  track: bool = False, tracker: str = "bytetrack.yaml", stream_buffer: bool = False,
                  html: bool = False, crops: bool = False, save_format: str = "png", annotate: bool = True,
                  append: bool = True, progress: bool | None = False, writer=None, sources: Sources | None = None,
                  on_result=None, resume=None) -> dict:
    """Explain `source` into `out_dir` (images as `ImageExplanation.save` writes them; videos and streams as
    `output/video.py` describes); returns the counts: images, frames, detections, errors, error_lines.

    `writer` (a `MediaExportWriter`) and `sources` (opened `Sources`, closed by the caller) may be given
    ready-made (the CLI opens the sources before loading the model); `on_result(result, entry)` runs after
    each image or frame is written; `resume` (a `VideoResume` the writer began with, `begin_resume`): the frames
    an earlier run finished are kept (counted in `resumed` too)."""
    from ..output.progress import Progress
    from ..output.video import MediaExportWriter
    from ..output.video_resume import ResumedFrame
    from .checks import check_thresholds, resolve_classes
    from .pipeline import BackgroundWriter, _core_for_writer

    conf, max_det = explainer.thresholds(conf, max_det)
    check_thresholds(conf, iou, max_det, batch)
    classes = resolve_classes(classes, explainer.names)
    vid_stride = check_vid_stride(vid_stride)
    if track:
        from ..output.tracks import load_tracker_config

        load_tracker_config(tracker)
    if writer is None:
        writer = MediaExportWriter(out_dir, tracker=str(tracker) if track else None, names=explainer.names,
                                   annotate=annotate, html=html, crops=crops, append=append, save_format=save_format)
        writer.manifest.update(explainer.meta)
    out = Path(writer.out)
    writer.settings = run_settings(explainer, conf, iou, classes, max_det)
    counts = {"images": 0, "frames": 0, "detections": 0, "errors": 0, "resumed": 0, "error_lines": []}
    own = sources is None
    try:
        if own:
            sources = Sources(source, vid_stride=vid_stride, buffer=stream_buffer, out_dir=out, recursive=recursive)
        writer.infos.update(sources.infos)
        if not sources.parts or sources.total == 0:
            raise YolocamError(f"no images or frames found in {'the sources' if source is None else repr(source)}")
        unit = "frames" if sources.has_frames else "images"
        with Progress(sources.total, desc="explain", unit=unit, enabled=progress) as bar:
            def done(result, entry) -> None:
                if entry is None:
                    counts["errors"] += 1
                    counts["error_lines"].append(f"{result.path}: {result.error}")
                else:
                    counts["frames" if result.frame is not None else "images"] += 1
                    counts["detections"] += len(entry["detections"])
                    counts["resumed"] += isinstance(result, ResumedFrame)
                bar.update(1, detections=counts["detections"], errors=counts["errors"])
                if on_result is not None:
                    on_result(result, entry)

            with BackgroundWriter(writer, maxsize=max(2, batch), on_done=done) as bg, _core_for_writer(explainer):
                for result in iter_explanations(explainer, sources, conf, iou, classes, max_det, batch, track, tracker,
                                                resume):
                    bg.put(result)
    except BaseException:
        with contextlib.suppress(Exception):
            writer.fail()  # the frames done stay listed (complete: false); a half-written one is removed
        raise
    finally:
        if own and sources is not None:
            sources.close()
    return counts
