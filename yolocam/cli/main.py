"""The `yolocam` command line: `explain`, `methods`, `demo`, `val`, `bench`.

Exit status: 0 success, 2 bad arguments or unusable input (one `yolocam: error: ...` line on stderr),
1 an unexpected failure, 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path
from typing import Sequence

from ..errors import YolocamError

RUNS_DIR = Path("runs") / "yolocam"


from .options import (  # noqa: F401  (the option values, also importable from here as before)
    _Parser, _typed, class_list, device_name, fuse_name, int_list, layers_spec, method_list, method_name,
    positive_int, resolve_classes, resolve_inputs, target_name, unit_float, warnings_to_stderr,
)


# --------------------------------------------------------------------------- commands
def _out_dir(arg: str | None, name: str) -> tuple[Path, bool]:
    """(output folder, whether it already existed): `arg`, or the next free runs/yolocam/<name>N."""
    from ..output.files import increment_dir

    out = Path(arg) if arg else increment_dir(RUNS_DIR / name)
    return out, out.exists()


def _drop_if_empty(out: Path, existed: bool) -> None:
    if not existed:
        with contextlib.suppress(OSError):
            out.rmdir()


def cmd_explain(args) -> int:
    from ..explain.explainer import Explainer
    from ..output.export import ExportWriter
    from ..explain.pipeline import run_explain
    from ..output.progress import Progress

    entries = resolve_inputs(args.source, recursive=args.recursive)
    out, existed = _out_dir(args.out, "explain")
    writer = ExportWriter(out, html=args.html, crops=args.crops, append=False)  # fails early if unwritable
    try:
        exp = Explainer(model=args.model, method=args.method, target=args.target, layers=args.layers,
                        fuse=args.fuse, imgsz=args.imgsz, device=args.device)
        classes = resolve_classes(args.classes, exp.names)
    except BaseException:
        _drop_if_empty(out, existed)
        raise
    writer.manifest.update(exp.meta)
    with Progress(len(entries), desc="explain") as bar:
        counts = run_explain(exp, entries, writer, args.conf, args.iou, classes, args.max_det, args.batch, bar)
    for line in counts["error_lines"][:20]:
        print(f"yolocam: warning: skipped {line}", file=sys.stderr)
    if counts["errors"] > 20:
        print(f"yolocam: warning: ... and {counts['errors'] - 20} more (see {out / 'manifest.json'})", file=sys.stderr)
    n_err = counts["errors"]
    print(f"yolocam: {counts['images']} images, {counts['detections']} detections, "
          f"{n_err} error{'s' if n_err != 1 else ''} -> {out}" + (f" (gallery: {out / 'index.html'})" if args.html
                                                                  else ""))
    if counts["images"] == 0:
        raise YolocamError(f"no image could be explained ({n_err} unusable input{'s' if n_err != 1 else ''})")
    return 0


def cmd_methods(args) -> int:
    from ..defaults import DEFAULT_METHOD
    from ..cam.methods import get_method, list_methods

    for name in list_methods():
        canonical = get_method(name).name
        note = " (default)" if name == DEFAULT_METHOD else (f" (alias of {canonical})" if canonical != name else "")
        print(f"{name}{note}")
    return 0


def cmd_demo(args) -> int:
    from ..explain.explainer import Explainer
    from ..output.export import ExportWriter
    from ..output.files import atomic_write_bytes, encode_png
    from ..output.render import summary_grid
    from ..demo.scenes import make_scene

    out, existed = _out_dir(args.out, "demo")
    writer = ExportWriter(out, html=True, append=False)
    try:
        exp = Explainer(model=args.model, imgsz=args.imgsz, device=args.device)
    except BaseException:
        _drop_if_empty(out, existed)
        raise
    scene = make_scene(args.seed)
    image_path = out / "scene.png"
    atomic_write_bytes(image_path, encode_png(scene.image))
    [result] = exp.explain(str(image_path), conf=args.conf, max_det=args.max_det)
    writer.manifest.update(exp.meta)
    writer.add(result)
    atomic_write_bytes(out / "summary.png", encode_png(summary_grid(result)))
    writer.finish()
    found = ", ".join(f"{d.name} {d.conf:.2f}" for d in result.detections) or "nothing"
    print(f"yolocam demo: scene {args.seed} ({len(scene.boxes)} shapes), model {exp.meta['model']}, "
          f"method {exp.meta['method']}: found {found}")
    print(f"  summary:  {out / 'summary.png'}")
    print(f"  gallery:  {out / 'index.html'}")
    print(f"  manifest: {out / 'manifest.json'}")
    return 0


def cmd_val(args) -> int:
    from ..evaluation.validation import main_val

    return int(main_val(args) or 0)


def cmd_bench(args) -> int:
    from .bench import main_bench

    return int(main_bench(args) or 0)


# --------------------------------------------------------------------------- parser
def _add_model_args(p, method: bool = True,
                    imgsz_help: str = "default: the size the checkpoint was trained at, else 640") -> None:
    from ..defaults import DEFAULT_FUSE, DEFAULT_LAYERS, DEFAULT_METHOD

    p.add_argument("--model", default=None, help="checkpoint path, model YAML or demo name (default: demo-v8)")
    if method:
        p.add_argument("--method", type=method_name, default=DEFAULT_METHOD, help=f"default {DEFAULT_METHOD}; "
                       "see 'yolocam methods'")
        p.add_argument("--target", type=target_name, default="class", help="class|conf|box|all|cluster")
        p.add_argument("--layers", type=layers_spec, default=DEFAULT_LAYERS, help="neck|head|backbone or 15,18,21")
        p.add_argument("--fuse", type=fuse_name, default=DEFAULT_FUSE, help="sum|max|origin|aligned")
    p.add_argument("--imgsz", type=positive_int, default=None, help=f"model input size in pixels ({imgsz_help})")
    p.add_argument("--device", type=device_name, default=None, help="cpu, cuda:0, ... (default: the model's)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="yolocam", description="Per-detection Grad-CAM-family heatmaps for ultralytics YOLO.",
                     allow_abbrev=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("explain", help="explain every detection in images", allow_abbrev=False)
    p.add_argument("source", nargs="+", metavar="SOURCE", help="image file, folder or glob (several allowed)")
    p.add_argument("--recursive", action="store_true", help="also take the images in folders' sub-folders")
    _add_model_args(p)
    p.add_argument("--conf", type=unit_float, default=0.25, help="confidence threshold (default 0.25)")
    p.add_argument("--iou", type=unit_float, default=0.7, help="NMS IoU threshold (default 0.7)")
    p.add_argument("--classes", type=class_list, default=None, help="keep only these classes: 0,2 or names")
    p.add_argument("--max-det", type=positive_int, default=300, help="detections per image (default 300)")
    p.add_argument("--batch", type=positive_int, default=1, help="images per model batch (default 1)")
    p.add_argument("--out", default=None, help=f"output folder (default: a new {RUNS_DIR / 'explain'}N)")
    p.add_argument("--html", action="store_true", help="also write the gallery index.html")
    p.add_argument("--crops", action="store_true", help="also write each box's crop of its overlay")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("methods", help="list the CAM methods (the default marked)")
    p.set_defaults(func=cmd_methods)

    p = sub.add_parser("demo", help="explain a generated scene with the bundled detector", allow_abbrev=False)
    _add_model_args(p, method=False)
    p.add_argument("--out", default=None, help=f"output folder (default: a new {RUNS_DIR / 'demo'}N)")
    p.add_argument("--seed", type=int, default=0, help="scene seed (default 0)")
    p.add_argument("--conf", type=unit_float, default=0.25, help="confidence threshold (default 0.25)")
    p.add_argument("--max-det", type=positive_int, default=300, help="detections per image (default 300)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("val", help="explain what a validator sees (TP/FP, localisation metrics)",
                       allow_abbrev=False)
    _add_model_args(p, imgsz_help="default: the model's training size")
    p.add_argument("--data", default=None, help="dataset YAML (default: generated scenes)")
    p.add_argument("--conf", type=unit_float, default=0.25)
    p.add_argument("--iou", type=unit_float, default=0.7)
    p.add_argument("--out", default=None, help=f"output folder (default: a new {RUNS_DIR / 'val'}N)")
    p.add_argument("--max-images", type=positive_int, default=None, help="cap on validation images")
    p.add_argument("--max-explanations", type=positive_int, default=None, help="cap on explained detections")
    p.add_argument("--compare-methods", type=method_list, nargs="?", default=None, const="all",
                   help="compare methods: a comma list, or all (the default when given alone)")
    p.add_argument("--scenes", type=positive_int, default=None, help="number of generated scenes (no --data)")
    p.set_defaults(func=cmd_val)

    p = sub.add_parser("bench", help="time explanations against the number of boxes", allow_abbrev=False)
    _add_model_args(p, method=False, imgsz_help="default 640")
    from ..defaults import DEFAULT_METHOD

    p.add_argument("--method", type=method_name, default=DEFAULT_METHOD)
    p.add_argument("--boxes", type=int_list, default=[10, 50, 100], help="box counts (default 10,50,100)")
    p.add_argument("--repeats", type=positive_int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--memory-mb", type=float, default=2048.0)
    p.add_argument("--image", choices=("noise", "scene"), default="noise",
                   help="test image: noise with flat shapes (default), or a generated scene of labelled objects")
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (see the module docstring)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a one-line error (2)
        return int(exc.code or 0)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        with warnings_to_stderr():
            return args.func(args)
    except YolocamError as exc:
        print(f"yolocam: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("yolocam: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the CLI's last line of defence
        if os.environ.get("YOLOCAM_DEBUG"):
            raise
        print(f"yolocam: unexpected error: {type(exc).__name__}: {' '.join(str(exc).split())} "
              "(set YOLOCAM_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1
