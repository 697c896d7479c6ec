"""`yolocam explain --ray` and `yolocam val --ray`: the command line's side of `yolocam.distributed`.

Ray is imported only when such a command runs; without it the command says how to install it (exit 2).
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import YolocamError
from .options import positive_int
from .terminal import printable


def add_ray_args(p, resume: bool) -> None:
    """--ray [ADDRESS], --workers, --gpus-per-worker (and --resume for explain)."""
    p.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help='run on Ray (pip install "yolocam[ray]"): alone, a new local Ray (or $RAY_ADDRESS); '
                        "ADDRESS: auto (the cluster 'ray start' made on this machine), host:port or ray://host:10001")
    p.add_argument("--workers", type=positive_int, default=1, help="--ray: workers, one model each (default 1)")
    p.add_argument("--gpus-per-worker", type=float, default=None,
                   help="--ray: GPUs per worker, fractions share a GPU (default: 1 when the cluster has GPUs, else 0)")
    p.add_argument("--cpus-per-worker", type=float, default=None,
                   help="--ray: CPUs per worker (default: a share of the cluster's, at most 1, leaving room to decode)")
    if resume:
        p.add_argument("--resume", action="store_true",
                       help="--ray runs and videos: continue a stopped run in --out, keeping the images (video frames) "
                            "whose files are complete")


def require_ray() -> None:
    """A one-line `YolocamError` (`pip install "yolocam[ray]"`) when Ray is missing."""
    from ..distributed.cluster import require_ray as check

    check()


def explain_on_ray(args, entries: list[str], out: Path, drise: dict) -> int:
    """The same files as `yolocam explain`, from a Ray Data pipeline (`distributed/explain.py`)."""
    from ..distributed import explain_dataset

    crops = args.html if args.crops is None else args.crops
    counts = explain_dataset(entries, out, model=args.model, workers=args.workers, gpus_per_worker=args.gpus_per_worker,
                             cpus_per_worker=args.cpus_per_worker,
                             address=args.ray or None, method=args.method, target=args.target, layers=args.layers,
                             fuse=args.fuse, imgsz=args.imgsz, device=args.device, conf=args.conf, iou=args.iou,
                             classes=args.classes, max_det=args.max_det, batch=args.batch, html=args.html, crops=crops,
                             save_format=args.save_format, resume=args.resume, progress=None,
                             explainer_options={**{k: v for k, v in drise.items() if k != "progress"},
                                                "exact": bool(getattr(args, "exact", False))})
    for line in counts["error_lines"][:20]:
        print(f"yolocam: warning: skipped {printable(line)}", file=sys.stderr)
    n_err = counts["errors"]
    skipped = f", {counts['skipped']} already done" if counts["skipped"] else ""
    print(f"yolocam: {counts['images']} images, {counts['detections']} detections, {n_err} error"
          f"{'s' if n_err != 1 else ''}{skipped} in {counts['seconds']:.1f} s on Ray -> {printable(out)}"
          + (f" (gallery: {printable(out / 'index.html')})" if args.html else ""))
    if counts["images"] + counts["skipped"] == 0:
        raise YolocamError(f"no image could be explained ({n_err} unusable input{'s' if n_err != 1 else ''})")
    return 0


def val_on_ray(args, drise: dict) -> int:
    """`yolocam val --ray`: `distributed.val.validate_dataset`, the same report merged exactly."""
    from ..evaluation.validation import _layers_arg

    if args.compare_methods is not None:
        raise YolocamError("--compare-methods is not supported with --ray")
    for name in ("max_images", "max_explanations"):
        if getattr(args, name) is not None:
            raise YolocamError(f"--{name.replace('_', '-')} is not supported with --ray (it depends on the order "
                               "in which one process sees the images)")
    require_ray()
    from ..distributed import validate_dataset

    drise = {k: v for k, v in drise.items() if k != "progress" and v is not None}
    validate_dataset(args.model, data=args.data, workers=args.workers, gpus_per_worker=args.gpus_per_worker,
                     cpus_per_worker=args.cpus_per_worker,
                     address=args.ray or None, method=args.method, target=args.target, layers=_layers_arg(args.layers),
                     fuse=args.fuse, imgsz=args.imgsz, conf=args.conf, iou=args.iou, device=args.device, out=args.out,
                     scenes=args.scenes, drise=drise, exact=bool(getattr(args, "exact", False)))
    print(f"saved to {printable(args.out)} (metrics.csv, metrics.json, predictions.csv, worst/index.html)")
    return 0
