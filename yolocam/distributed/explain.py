"""`explain_dataset`: `yolocam explain` as a Ray Data pipeline.

    paths (driver) -> decode (tasks, DECODE_CPUS each) -> explain + write (one actor per worker, each
    holding one `Explainer` and an `ExportWriter`) -> manifest entries -> one manifest (driver)

Each image's files are written by the worker that explained it, with the single-process writer
(`ExportWriter.write_files`, every file under a temporary name then renamed), under a stem the driver
fixed beforehand, so the folder equals a single-process run of the same source. The driver records an
image in the manifest only once its worker has returned (all files written), rewrites the manifest
every few seconds, and at the end writes it in the source's order.

Faults: actors are restarted and their batches retried (Ray's `max_restarts` / `max_task_retries`);
a retried image is simply written again. Resume: a rerun into the same folder keeps every image whose
manifest entry was recorded, is well formed and whose files all exist, and explains the rest (temporary
files of dead runs are removed; a file is never trusted unless the manifest lists it as finished). An
image keeps the stem the earlier run gave it; the files of an entry not kept are removed (`resume`).
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import time
import warnings
from pathlib import Path

import numpy as np

from ..defaults import DEFAULT_FUSE, DEFAULT_LAYERS, DEFAULT_METHOD
from ..errors import YolocamError
from ..output.cleanup import clear_previous, read_manifest, remove_listed, remove_temp_files
from ..output.lock import owning
from ..output.paths import outside_folder
from ..output.export import ExportWriter
from ..output.progress import Progress
from .cluster import DECODE_CPUS, check_workers, connect, placement, worker_cpus
from .resume import files_present, plan_resume, valid_entry

MANIFEST_EVERY_S = 5.0  # the driver rewrites the manifest at most this often during a run


def _decode(batch: dict) -> dict:
    """Ray Data stage: read each group's image files as ultralytics does (`inputs.images`). A row is one
    group of up to `--batch` consecutive images; its images travel pickled (one binary cell), an unusable
    file as its error text."""
    from ..inputs.images import iter_images

    blobs = []
    for paths in batch["path"]:
        items = list(iter_images([str(p) for p in paths]))
        blobs.append(pickle.dumps([it.image if it.error is None else it.error for it in items], protocol=5))
    return {"i": batch["i"], "path": batch["path"], "stem": batch["stem"], "images": np.asarray(blobs, dtype=object)}


class ExplainWorker:
    """Ray Data actor: one `Explainer` (built once per actor) and a writer into `out`.

    `__call__(batch)` explains each group's images (together, as `yolocam explain --batch N` does) and
    writes their files; returns per group its indices `i` and per image its manifest entry or error, as
    JSON lists.
    """

    def __init__(self, out: str, explainer: dict, run: dict, writer: dict, threads: int = 1,
                 crash_marker: str | None = None):
        import torch

        from ..explain.explainer import Explainer

        torch.set_num_threads(max(1, int(threads)))
        self.exp = Explainer(**explainer)
        self.run = run
        self.writer = ExportWriter(out, append=False, **writer)
        self.crash_marker = crash_marker

    def _maybe_crash(self) -> None:
        """Test hook: the first call ever (over all attempts, marked by a file) kills this process."""
        if self.crash_marker and not os.path.exists(self.crash_marker):
            Path(self.crash_marker).write_text(str(os.getpid()))
            os._exit(1)

    def __call__(self, batch: dict) -> dict:
        self._maybe_crash()
        return {"i": batch["i"], "result": np.asarray(
            [json.dumps(self._group(p, s, b)) for p, s, b in zip(batch["path"], batch["stem"], batch["images"])],
            dtype=object)}

    def _group(self, paths, stems, blob) -> list[dict]:
        decoded = pickle.loads(blob)
        good = [k for k, im in enumerate(decoded) if not isinstance(im, str)]
        results = dict(zip(good, self.exp.iter_explain([decoded[k] for k in good], **self.run)))
        out = []
        for k, (path, stem) in enumerate(zip(paths, stems)):
            result = results.get(k)
            if result is None or result.error is not None:
                out.append({"error": {"path": str(path), "error": decoded[k] if result is None else result.error}})
                continue
            result.path = str(path)
            out.append({"image": self.writer.write_files(result, str(stem))})
        return out


def explain_dataset(source, out, model=None, workers: int = 1, gpus_per_worker: float | None = None,
                    cpus_per_worker: float | None = None, address: str | None = None, method: str | None = None,
                    target: str = "class", layers=DEFAULT_LAYERS, fuse: str = DEFAULT_FUSE, imgsz: int | None = None,
                    device=None, conf: float = 0.25, iou: float = 0.7, classes=None, max_det: int = 300,
                    batch: int = 1, html: bool = False, crops: bool = False, save_format: str = "png",
                    resume: bool = True, recursive: bool = False, progress: bool | None = False,
                    explainer_options: dict | None = None, _crash_marker: str | None = None) -> dict:
    """Explain every image of `source` (paths: a file, folder, glob or list) into `out` on Ray.

    workers: actors, each holding one `Explainer`; gpus_per_worker: GPUs each reserves (0: CPU workers;
    fractions share a GPU; None: 1 when the cluster has GPUs, else 0); cpus_per_worker: None = a share
    that leaves room for decoding. address: the cluster (`auto`, `host:port`, `ray://host:10001`; None:
    an initialised Ray, $RAY_ADDRESS, or a new local one). `out` must be a path every worker can write
    (local disk on one machine, a shared file system on a cluster). resume: keep the finished images of
    an earlier run into `out` (False: start afresh). Other arguments as `Explainer` / `Explainer.explain`
    / `ExportWriter` (`explainer_options`: more `Explainer` keywords).
    Returns counts: images, detections, errors, skipped (already finished), seconds (whole call), first_s
    (until the first image came back: Ray, actors and models started), error_lines.
    """
    from ..inputs.images import resolve_source

    workers, gpus = check_workers(workers, gpus_per_worker)
    entries = resolve_source(source, recursive=recursive)
    if not entries:
        raise YolocamError(f"no images found in source {source!r}")
    if not all(isinstance(e, (str, os.PathLike)) for e in entries):
        raise YolocamError("explain_dataset: expected image paths (a file, folder, glob or list of paths), got arrays")
    entries = [str(e) for e in entries]
    start = time.monotonic()
    explainer = dict(model=model, method=method, target=target, layers=layers, fuse=fuse, imgsz=imgsz, device=device,
                     **(explainer_options or {}))
    meta = _run_meta(explainer)  # also checks every setting here, before Ray, any folder or worker
    entries, _ = outside_folder(entries, out)  # never the output folder's own files (an earlier run's overlays)
    if not entries:
        raise YolocamError(f"every source image is inside the output folder {out}; choose another out")
    ray = connect(address)
    gpus, explainer["device"] = placement(ray, gpus, device)
    cpus = worker_cpus(ray, workers, cpus_per_worker)  # refused here, before anything in `out` changes
    with owning(out):  # one run owns `out` at a time (re-entrant: the CLI already holds it)
        return _explain_into(out, entries, explainer, meta, ray, gpus, workers, cpus, resume, html,
                             crops, save_format, progress, start, _crash_marker,
                             run=dict(conf=conf, iou=iou, classes=classes, max_det=max_det, batch=batch))


def _explain_into(out, entries, explainer, meta, ray, gpus, workers, cpus, resume, html, crops,
                  save_format, progress, start, _crash_marker, run: dict) -> dict:
    """`explain_dataset` once `out` is this run's: clear or resume, run the pipeline, write the manifest."""
    batch = run["batch"]
    if not resume:
        clear_previous(out)
    old = read_manifest(out) if resume else None
    writer = ExportWriter(out, html=html, crops=crops, append=False, save_format=save_format)
    remove_temp_files(writer.out)
    plan = plan_resume(writer, old, entries, crops, save_format)  # stems follow paths (see `resume`)
    if plan.done or plan.extras:
        _check_same_run(old, meta)
    remove_listed(writer.out, plan.drop)  # the files of the earlier entries not kept: never left unlisted
    stems, done = plan.stems, plan.done
    images = {i: done[i] for i in done}
    images.update({len(entries) + k: e for k, e in enumerate(plan.extras)})  # finished, no longer in the source
    errors: dict[int, dict] = {}
    todo = [{"i": i, "path": p, "stem": s} for i, (p, s) in enumerate(zip(entries, stems)) if i not in done]
    counts = {"images": 0, "detections": 0, "errors": 0, "skipped": len(done), "error_lines": []}

    def write(final: bool = False) -> None:
        writer.manifest.update(meta)
        writer.set_entries([images[i] for i in sorted(images)], [errors[i] for i in sorted(errors)])
        writer.finish() if final else writer.write_manifest()

    with Progress(len(entries), desc="explain", enabled=progress) as bar, _record_on_failure(write):
        bar.update(len(done))
        if todo:
            ds = _pipeline(ray, todo, str(writer.out), explainer, run,
                           dict(html=False, crops=crops, save_format=save_format), workers, gpus, cpus, batch,
                           _crash_marker)
            last = time.monotonic()
            for i, res in _rows(ds):
                counts.setdefault("first_s", time.monotonic() - start)  # Ray, actors and models started
                if "error" in res:
                    errors[i] = res["error"]
                    counts["errors"] += 1
                    counts["error_lines"].append(f"{res['error']['path']}: {res['error']['error']}")
                else:
                    images[i] = res["image"]
                    counts["images"] += 1
                    counts["detections"] += len(res["image"]["detections"])
                bar.update(1, detections=counts["detections"], errors=counts["errors"])
                if time.monotonic() - last > MANIFEST_EVERY_S:
                    write()
                    last = time.monotonic()
    write(final=True)
    counts["seconds"] = time.monotonic() - start
    return counts


def _rows(ds):
    """(source index, entry or error) per image, from the pipeline's group rows as they arrive."""
    for row in ds.iter_rows():
        yield from zip((int(i) for i in row["i"]), json.loads(row["result"]))


def _pipeline(ray, todo: list[dict], out: str, explainer: dict, run: dict, writer: dict, workers: int, gpus: float,
              cpus: float, batch: int, crash_marker: str | None):
    """The Ray Data dataset of manifest entries: from_items -> decode tasks -> explaining actors."""
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # the driver shows one progress bar of its own
    size = max(1, int(batch))  # groups of `batch` consecutive images, each explained as one model batch
    groups = [{key: [t[key] for t in todo[k:k + size]] for key in ("i", "path", "stem")}
              for k in range(0, len(todo), size)]
    blocks = max(1, min(len(groups), max(16 * workers, len(groups) // 256)))  # small blocks: work spreads, rows stream
    ds = ray.data.from_items(groups, override_num_blocks=blocks)
    ds = ds.map_batches(_decode, batch_size=1, batch_format="numpy", num_cpus=DECODE_CPUS)
    with warnings.catch_warnings():  # Ray >= 2.5x calls these keywords deprecated but still honours them
        warnings.simplefilter("ignore", DeprecationWarning)
        return ds.map_batches(
            ExplainWorker, batch_size=1, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=cpus, num_gpus=gpus or None,
            fn_constructor_kwargs=dict(out=out, explainer=explainer, run=run, writer=writer,
                                       threads=max(1, round(cpus)), crash_marker=crash_marker),
            max_restarts=-1, max_task_retries=-1)  # a dead worker is restarted, its batch retried


def _finished(out: Path, old, entries: list[str], stems: list[str], crops: bool, save_format: str) -> dict:
    """{source index: manifest entry} of the images an earlier run into `out` finished: same path, same stem,
    the entry shaped as `write_files` writes it and all its files present; errors are retried."""
    if not isinstance(old, dict) or not isinstance(old.get("images"), list):
        return {}
    recorded = {(e.get("path"), e.get("stem")): e for e in old["images"] if isinstance(e, dict)}
    done = {}
    for i, (path, stem) in enumerate(zip(entries, stems)):
        entry = recorded.get((path, stem))
        if valid_entry(entry, path, stem, crops, save_format) and files_present(out, entry):
            done[i] = entry
    return done


def _run_meta(explainer: dict) -> dict:
    """The manifest's model, method, target and layers, from an `Explainer` built here on the CPU (the driver
    may have no GPU); a bad setting raises its `YolocamError` before any worker starts."""
    from ..explain.explainer import Explainer

    return Explainer(**dict(explainer, device="cpu")).meta


def _check_same_run(old: dict, meta: dict) -> None:
    """Resuming is only allowed with the model, method, target and layers that made the kept images."""
    diff = [k for k in ("model", "method", "target", "layers") if old.get(k) != meta[k]]
    if diff:
        raise YolocamError(f"cannot resume: the output folder was written with another {', '.join(diff)} "
                           f"({', '.join(f'{k}={old.get(k)!r}' for k in diff)}); choose another out or resume=False")


@contextlib.contextmanager
def _record_on_failure(write):
    """If the run stops (an error, Ctrl-C), the manifest still lists every image finished so far (for a resume)."""
    try:
        yield
    except BaseException:
        write()
        raise
