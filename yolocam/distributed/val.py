"""`validate_dataset`: `yolocam val` with the validation set split over Ray workers, merged exactly.

The driver lists the validation images as ultralytics' dataset scan keeps them (the images it leaves
out are counted once, in the report's `skipped`), orders them by aspect ratio as its rectangular
validator does, and cuts that order into shards of whole validator batches (so every image is
letterboxed to the same batch shape as in one process). Each shard is validated by
`evaluation.validation.validate` in a Ray task (retried if its worker dies) on a folder of links to
its images and labels. The driver then merges the shards from sums and counts, never from averages:
ultralytics' metrics are recomputed from the concatenated per-prediction statistics (tp, conf, class),
the localisation and why-not tables and the confusions from the concatenated per-prediction records, the
missed ground truths (with their maps, for `missed.npz`) concatenated in the single run's order, and every
gallery section (false and true positives, missed, confusions, context) re-ranked over the shards.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from types import SimpleNamespace

from .._text import printable
from ..defaults import DEFAULT_FUSE, DEFAULT_LAYERS, DEFAULT_METHOD
from ..errors import YolocamError
from .cluster import check_workers, connect, placement, worker_cpus


def list_val_images(info: dict, data=None) -> list[str]:
    """The validation images of a checked dataset (`dataset_scan.val_images`)."""
    from ..evaluation.dataset_scan import val_images

    return val_images(info, data)


def shards_by_batch(paths: list[str], batch: int, shards: int) -> list[list[str]]:
    """`paths` ordered by aspect ratio (h / w, as ultralytics' rect validator) and cut into at most `shards`
    runs of whole `batch`-sized batches."""
    import numpy as np
    from PIL import Image
    from ultralytics.data.utils import exif_size

    def ratio(p: str) -> float:
        try:
            with Image.open(p) as im:
                w, h = exif_size(im)
            return h / w
        except (OSError, ValueError, ZeroDivisionError):
            return 1.0  # unreadable: the validator reports it; its place does not change other batches

    order = np.argsort(np.asarray([ratio(p) for p in paths]), kind="stable")
    ordered = [paths[k] for k in order]
    batches = math.ceil(len(ordered) / batch)
    per = batch * max(1, math.ceil(batches / max(1, shards)))
    return [ordered[k:k + per] for k in range(0, len(ordered), per)]


def _shard_data(folder: Path, paths: list[str], names: dict, extra: dict | None = None) -> Path:
    """A dataset YAML in `folder` whose val images (and their labels) are links to `paths` (`extra`: more keys,
    e.g. a pose dataset's kpt_shape and flip_idx); returns it with the link -> original path map written beside."""
    from ultralytics.data.utils import img2label_paths

    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    for k, (path, label) in enumerate(zip(paths, img2label_paths(paths))):
        os.symlink(os.path.abspath(path), folder / "images" / f"{k:07d}{Path(path).suffix}")
        if os.path.isfile(label):
            os.symlink(os.path.abspath(label), folder / "labels" / f"{k:07d}.txt")
    lines = [f"path: {folder}", "train: images", "val: images", "names:"]
    lines += [f"  {int(c)}: {json_str(n)}" for c, n in sorted(names.items())]
    lines += [f"{k}: {json.dumps(v)}" for k, v in (extra or {}).items()]  # JSON is valid YAML
    data = folder / "data.yaml"
    data.write_text("\n".join(lines) + "\n")
    return data


def json_str(text: str) -> str:
    return json.dumps(str(text))  # a JSON string is a valid YAML scalar


def validate_shard(paths: list[str], names: dict, options: dict, threads: int = 1, extra: dict | None = None) -> dict:
    """Ray task: validate one shard (`validate(**options)`); returns its records (confusions included), missed
    ground truths with their maps, every gallery section's cases, ultralytics' raw statistics and counters, with
    image paths mapped back to `paths`."""
    import torch

    from ..evaluation.report import SECTIONS
    from ..evaluation.validation import validate

    torch.set_num_threads(max(1, int(threads)))
    tmp = Path(tempfile.mkdtemp(prefix="yolocam_shard_"))
    try:
        data = _shard_data(tmp / "data", paths, names, extra)
        report = validate(data=str(data), out=None, verbose=False, _shard=True, **options)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    links = {str(tmp / "data" / "images" / f"{k:07d}{Path(p).suffix}"): p for k, p in enumerate(paths)}
    worst = report.worst_cases
    buckets = {kind: worst.bucket(kind) for kind in SECTIONS}  # false / true positives and the why-not kinds
    for rec in [*report.predictions, *report.missed, *(r for cases in buckets.values() for r, _ in cases)]:
        rec["image"] = links.get(rec["image"], rec["image"])  # a record in several lists: mapped once, then kept
    # one pickle: the missed records' maps (`why_not.MapRecord`) keep their shared per-image stacks, and a worst
    # case that is also a prediction or missed record stays the same object in the driver
    return {"predictions": report.predictions, "missed": report.missed, "stats": report.stats,
            "worst": buckets, "counts": report.counts, "settings": report.settings, "names": names}


def scan_val_images(task: str, data, info: dict, batch: int) -> tuple[list[str], dict]:
    """(the validation images ultralytics' dataset scan keeps, in its order; what it left out, as
    `dataset_scan.skipped_by_scan` counts it): the task's validator builds its dataset here, in the driver, as
    one process would, so the shards hold only the images a single-process run validates (the same batches)
    and nothing usable is refused as there."""
    from ..evaluation.task_validators import explaining_validator

    save = Path(tempfile.mkdtemp(prefix="yolocam_scan_"))
    try:
        validator = explaining_validator(task)(save_dir=save, args=dict(
            task=task, data=str(data), mode="val", rect=True, batch=batch, plots=False))
        validator.data, validator.stride = info, 32  # the stride shapes rect batches only, not the scan
        dataset = validator.build_dataset(info["val"], mode="val", batch=batch)
    finally:
        shutil.rmtree(save, ignore_errors=True)
    return list(dataset.im_files), validator.skipped


def validate_dataset(model=None, data=None, workers: int = 1, gpus_per_worker: float | None = None,
                     cpus_per_worker: float | None = None, address: str | None = None, method: str | None = None,
                     target="class", layers=DEFAULT_LAYERS, fuse: str = DEFAULT_FUSE, imgsz: int | None = None,
                     conf: float = 0.25, iou: float = 0.7, device=None, out=None, scenes: int | None = None,
                     batch: int = 16, val_conf: float | None = None, worst: int = 12, verbose: bool = True,
                     drise: dict | None = None, shards: int | None = None, exact: bool = False):
    """`yolocam.validate` on Ray: the same report (metrics, table, predictions, missed, worst cases), computed
    by `workers` Ray workers on shards of the validation set (`shards`: default 2 per worker).

    Arguments as `validate` plus workers, gpus_per_worker, cpus_per_worker, address (as `explain_dataset`).
    Not written: ultralytics' own val/ folder (each shard's is temporary). Returns a `ValidationReport`.
    """
    from ..evaluation.dataset_scan import check_names
    from ..evaluation.report import WorstCases, build_report
    from ..evaluation.validation import check_dataset, default_dataset, model_task, warn_about_dataset

    workers, gpus = check_workers(workers, gpus_per_worker)
    ray = connect(address)
    gpus, device = placement(ray, gpus, device)
    tmp = None if out is not None else Path(tempfile.mkdtemp(prefix="yolocam_val_"))
    root = Path(out) if out is not None else tmp
    try:
        root.mkdir(parents=True, exist_ok=True)
        generated = data is None
        info = None if generated else check_dataset(data)
        task, model_names = model_task(model, with_names=True)
        if not generated:  # as `validate` checks them
            list_val_images(info, data)
        data_names = None if generated else check_names(info["names"], model_names, data)
        if generated:
            data = default_dataset(root / "data", scenes or 32, task=task)
            info = check_dataset(data)
        names = {int(k): str(v) for k, v in info["names"].items()}
        extra = {k: list(info[k]) for k in ("kpt_shape", "flip_idx") if info.get(k) is not None}  # pose
        kept, skipped = scan_val_images(task, data, info, batch)
        parts = shards_by_batch(kept, batch, shards or 2 * workers)
        options = dict(model=model, method=method, target=target, layers=layers, fuse=fuse, imgsz=imgsz, conf=conf,
                       iou=iou, device=device, batch=batch, val_conf=val_conf, worst=worst, drise=drise, exact=exact)
        cpus = worker_cpus(ray, workers, cpus_per_worker, reserve=0.0)  # no decode tasks here
        task = ray.remote(num_cpus=cpus, num_gpus=gpus or 0, max_retries=3, retry_exceptions=False)(validate_shard)
        threads = max(1, round(cpus))
        results = _run_bounded(ray, [lambda p=p: task.remote(p, names, options, threads, extra) for p in parts],
                               workers)
        report = _merge(results, names, data, WorstCases(worst), build_report)
        report.skipped = skipped
        if data_names is not None:
            report.settings["data_names"] = data_names
        warn_about_dataset(report, model_names)
        if out is not None:
            report.save(root)
        if verbose:
            print(printable(report.format(), keep="\n"))
        return report
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _run_bounded(ray, starts: list, limit: int) -> list:
    """Run the task starters with at most `limit` in flight; results in the starters' order."""
    refs: dict = {}
    pending = list(enumerate(starts))
    results: list = [None] * len(starts)
    while pending or refs:
        while pending and len(refs) < limit:
            k, start = pending.pop(0)
            refs[start()] = k
        ready, _ = ray.wait(list(refs), num_returns=1)
        for ref in ready:
            try:
                results[refs.pop(ref)] = ray.get(ref)
            except ray.exceptions.RayTaskError as exc:
                cause = exc.cause if isinstance(getattr(exc, "cause", None), YolocamError) else None
                if cause is not None:
                    raise cause from None
                raise
    return results


def _merge(results: list[dict], names: dict, data, worst: WorstCases, build_report):
    """One report from the shards' results (in shard order): statistics concatenated, metrics recomputed."""
    import numpy as np

    from ..evaluation.task_validators import metrics_class

    task = results[0]["settings"].get("task", "detect") if results else "detect"
    metrics = metrics_class(task)(names=names)  # segment / pose: their tp_m / tp_p statistics merge the same way
    stats = [r["stats"] for r in results if r["stats"]]
    if stats:
        metrics.stats = {k: [s[k] for s in stats] for k in metrics.stats}
        metrics.process()
    else:
        metrics.nt_per_class = np.zeros(len(names), int)
    records = [rec for r in results for rec in r["predictions"]]
    missed = [m for r in results for m in r["missed"]]
    for r in results:  # every gallery section, re-ranked over the shards (kinds in `report.SECTIONS`' order)
        for kind, cases in r["worst"].items():
            for rec, heat in cases:
                worst.offer(rec, heat, kind=kind)
    total = lambda key: sum(int(r["counts"][key]) for r in results)  # noqa: E731
    validator = SimpleNamespace(metrics=metrics, seen=total("images"))
    collector = SimpleNamespace(records=records, missed=missed, worst=worst, images_explained=total("images_explained"),
                                unmatched=total("unmatched_predictions"), label_mismatches=total("label_mismatches"))
    settings = dict(results[0]["settings"], data=str(data)) if results else {"data": str(data)}
    return build_report(validator, collector, names, settings)
