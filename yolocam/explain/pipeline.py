"""The explain pipeline: decode images ahead on one thread, write results behind on another.

The model runs on the caller's thread; a folder run is then bound by the model, not by I/O.
Both queues are bounded, so memory stays at a few images' worth of heatmaps.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from typing import Callable, Iterator, Sequence

import torch

from ..inputs.images import iter_images
from ..output.export import ExportWriter
from ..output.results import ImageExplanation

_END = object()


class BackgroundWriter:
    """Runs `ExportWriter.add` on a worker thread fed by a bounded queue, so PNG/npz encoding and
    disk writes overlap the model's work. `on_done(result, entry)` runs on the worker after each image.

    An exception on the worker stops further writing and is re-raised by the next `put` or by `close`;
    `close` always finishes the writer (manifest, gallery) with what was written.
    """

    def __init__(self, writer: ExportWriter, maxsize: int = 4, on_done: Callable | None = None):
        self.writer, self.on_done = writer, on_done
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, int(maxsize)))
        self._exc: BaseException | None = None  # raised once on the caller's thread
        self._failed = False  # stays set: nothing more is written after a failure
        self._closed = False
        self._thread = threading.Thread(target=self._work, name="yolocam-writer", daemon=True)
        self._thread.start()

    def __enter__(self) -> "BackgroundWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _work(self) -> None:
        while True:
            result = self._queue.get()
            if result is None:
                return
            if self._failed:
                continue  # drain without writing after a failure
            try:
                entry = self.writer.add(result)
                if self.on_done is not None:
                    self.on_done(result, entry)
            except BaseException as exc:  # re-raised on the caller's thread
                self._exc, self._failed = exc, True

    def _raise(self) -> None:
        if self._exc is not None:
            exc, self._exc = self._exc, None
            raise exc

    def put(self, result: ImageExplanation) -> None:
        """Queue one result for writing (blocks while the queue is full)."""
        self._raise()
        self._queue.put(result)

    def close(self) -> None:
        """Wait for queued results, finish the writer, and re-raise a worker failure if there was one."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join()
        self.writer.finish()
        self._raise()


def prefetch(entries: Sequence[str], depth: int) -> Iterator:
    """Decode images on a background thread, `depth` ahead; yields `ImageItem`s in order."""
    q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def put(obj) -> bool:
        while not stop.is_set():
            with contextlib.suppress(queue.Full):
                q.put(obj, timeout=0.2)
                return True
        return False

    def work() -> None:
        try:
            for item in iter_images(entries):
                if not put(item):
                    return
        except BaseException as exc:  # handed to the consumer
            put(exc)
        put(_END)

    thread = threading.Thread(target=work, name="yolocam-prefetch", daemon=True)
    thread.start()
    try:
        while (obj := q.get()) is not _END:
            if isinstance(obj, BaseException):
                raise obj
            yield obj
    finally:
        stop.set()


def run_explain(explainer, entries: Sequence[str], writer, conf: float, iou: float, classes, max_det: int,
                batch: int, progress=None) -> dict:
    """Explain `entries` into `writer`, loading ahead and writing behind the model; returns counts."""
    counts = {"images": 0, "detections": 0, "errors": 0, "error_lines": []}
    lock = threading.Lock()

    def done(result, entry) -> None:
        with lock:
            if entry is None:
                counts["errors"] += 1
                counts["error_lines"].append(f"{result.path}: {result.error}")
            else:
                counts["images"] += 1
                counts["detections"] += len(entry["detections"])
        if progress is not None:
            progress.update(1, detections=counts["detections"], errors=counts["errors"])

    with BackgroundWriter(writer, maxsize=max(2, batch), on_done=done) as bg, _core_for_writer(explainer):
        items = prefetch(entries, depth=2 * batch + 2)  # decoded ImageItems keep their paths
        for result in explainer.iter_explain(items, conf=conf, iou=iou, classes=classes, max_det=max_det,
                                             batch=batch):
            bg.put(result)
    return counts


@contextlib.contextmanager
def _core_for_writer(explainer):
    """On a CPU model, leave one core to the writer: torch runs one thread fewer meanwhile (restored after).

    Measured on 2 cores (60 generated scenes, demo-v8): 9.6 s with torch on both cores, 8.2 s with
    one, whole command included; busy OpenMP threads and the writer otherwise slow each other down.
    """
    threads = torch.get_num_threads()
    cpu = explainer.adapter.device.type == "cpu" and threads > 1
    if cpu:
        torch.set_num_threads(threads - 1)
    try:
        yield
    finally:
        if cpu:
            torch.set_num_threads(threads)
