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


# --------------------------------------------------------------------------- option values
class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (`yolocam explain: error: ...`) and exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _typed(fn):
    """Wrap a validator so that a YolocamError becomes argparse's one-line `argument --x: ...` error."""

    def wrapper(text):
        try:
            return fn(text)
        except YolocamError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    wrapper.__name__ = fn.__name__
    return wrapper


@_typed
def method_name(text: str) -> str:
    from ..cam.methods import get_method

    get_method(text)
    return text


@_typed
def method_list(text: str) -> list[str]:
    """Comma-separated method names, or `all` (every registered method, aliases left out)."""
    from ..cam.methods import get_method, list_methods

    if text.strip() == "all":
        return list(dict.fromkeys(get_method(m).name for m in list_methods()))
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise YolocamError(f"expected a comma-separated list of methods, got {text!r}")
    return [method_name(n) for n in names]


@_typed
def target_name(text: str) -> str:
    from ..model.targets import get_target

    get_target(text)
    return text


@_typed
def fuse_name(text: str) -> str:
    from ..cam.fusion import check_fusion

    return check_fusion(text)


@_typed
def layers_spec(text: str) -> str | list[int]:
    """`neck`, `head`, `backbone`, or comma-separated layer indices such as `15,18,21`."""
    from ..model.layers import LAYER_SETS

    if text in LAYER_SETS:
        return text
    parts = [p.strip() for p in text.split(",")]
    if not parts or not all(p.isdigit() for p in parts):
        raise YolocamError(f"unknown layers {text!r}; expected one of {', '.join(LAYER_SETS)} "
                           "or comma-separated layer indices like 15,18,21")
    return [int(p) for p in parts]


@_typed
def int_list(text: str) -> list[int]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise YolocamError(f"expected comma-separated positive integers like 10,50,100, got {text!r}")
    return [int(p) for p in parts]


@_typed
def class_list(text: str) -> list[int | str]:
    """Class indices or names, comma-separated (`0,2` or `circle,cross`); names are checked once the model loads."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise YolocamError(f"expected comma-separated class indices like 0,2, got {text!r}")
    return [int(p) if p.isdigit() else p for p in parts]


@_typed
def unit_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise YolocamError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise YolocamError(f"expected a number in [0, 1], got {text}")
    return value


@_typed
def positive_int(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise YolocamError(f"expected a positive integer, got {text!r}")
    return int(text)


@_typed
def device_name(text: str) -> str:
    """`cpu`, `cuda`, `cuda:N`, `N` (= cuda:N) or `mps`; refused when that device is not available here."""
    import torch

    spec = text.strip().lower()
    spec = f"cuda:{spec}" if spec.isdigit() else spec
    try:
        dev = torch.device(spec)
    except RuntimeError:
        raise YolocamError(f"expected cpu, cuda, cuda:N or mps, got {text!r}") from None
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise YolocamError(f"{text!r} asked for, but CUDA is not available here; use --device cpu")
        if (dev.index or 0) >= n:
            raise YolocamError(f"{text!r} asked for, but this machine has CUDA devices 0..{n - 1}")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise YolocamError(f"{text!r} asked for, but MPS is not available here; use --device cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise YolocamError(f"expected cpu, cuda, cuda:N or mps, got {text!r}")
    return str(dev)


def resolve_classes(spec: list[int | str] | None, names: dict[int, str]) -> list[int] | None:
    """Class indices for `--classes` (indices or names) against the model's `names`."""
    if spec is None:
        return None
    by_name = {v: k for k, v in names.items()}
    valid = ", ".join(f"{k}={v}" for k, v in sorted(names.items()))
    out = []
    for item in spec:
        cls = item if isinstance(item, int) else by_name.get(item)
        if cls is None or cls not in names:
            raise YolocamError(f"--classes: unknown class {item!r}; this model's classes are {valid}")
        out.append(cls)
    return out


def resolve_inputs(sources: Sequence[str]) -> list[str]:
    """Image files for the SOURCE arguments; a missing path or a folder without images is an error."""
    from ..inputs.images import IMAGE_SUFFIXES, resolve_source

    entries: list[str] = []
    for src in sources:
        if not any(ch in src for ch in "*?[") and not os.path.exists(src):
            raise YolocamError(f"source not found: {src} (expected an image file, a folder or a glob)")
        found = resolve_source(src)
        if not found:
            raise YolocamError(f"no images in folder {src} (looked for {', '.join(IMAGE_SUFFIXES)})")
        entries.extend(found)
    return entries


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

    entries = resolve_inputs(args.source)
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
