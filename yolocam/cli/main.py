"""The `yolocam` command line: `explain`, `methods`, `demo`, `val`, `bench`, `export-demo`.

Exit status: 0 success, 2 bad arguments or unusable input (one `yolocam: error: ...` line on stderr),
1 an unexpected failure, 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

from ..errors import YolocamError
from .terminal import plural, printable

CLASSIFY_DEMO_CONF = 0.01  # the classifier demo draws no map for classes the model gives less probability

VAL_FOLDERS = ("worst", "data", "val")  # the folders `yolocam val` writes inside --out
SAVE_FORMATS = ("jpg", "png")  # = output/export.py's, listed here so that --help needs no numpy or OpenCV


from .out_folder import RUNS_DIR, out_dir, outside_out, owned, reuse
from .ray_commands import add_ray_args
from .options import (  # noqa: F401  (the option values, also importable from here as before)
    drise_options, explainer_from_args,
    _Parser, _typed, class_list, device_name, fuse_name, imgsz_value, int_list, layers_spec, method_list,
    method_name, positive_float, positive_int, preflight, resolve_classes, resolve_inputs, target_name, unit_float,
    warnings_to_stderr,
)


# --------------------------------------------------------------------------- commands
def cmd_explain(args) -> int:
    from .video_command import cmd_explain_media, media_sources

    if media_sources(args.source):  # videos, URLs, streams, webcams, screen, .txt/.streams lists
        return cmd_explain_media(args)
    entries = resolve_inputs(args.source, recursive=args.recursive)
    if args.ray is not None:
        from .ray_commands import explain_on_ray, require_ray

        require_ray()  # before any folder is touched
        out, existed = out_dir(args.out, "explain", args.exist_ok or args.resume)
        entries = outside_out(entries, out)
        with owned(out, existed, args.exist_ok or args.resume):  # explain_dataset clears it once the cluster fits
            return explain_on_ray(args, entries, out, drise_options(args))
    if args.resume:
        raise YolocamError("--resume needs --ray for images (a single-process image run always starts afresh)")
    out, existed = out_dir(args.out, "explain", args.exist_ok)
    entries = outside_out(entries, out)
    with owned(out, existed, args.exist_ok):
        return _explain_into(args, entries, out, existed)


def _explain_into(args, entries: list, out: Path, existed: bool) -> int:
    preflight(args)  # a missing --model file or device is answered before torch loads
    from . import notes
    from ..output.export import ExportWriter
    from ..explain.pipeline import run_explain
    from ..output.progress import Progress

    crops = args.html if args.crops is None else args.crops  # the gallery's cards show the crops
    writer = ExportWriter(out, html=args.html, crops=crops, append=False, save_format=args.save_format)  # fails early if unwritable
    exp, classes = explainer_from_args(args)
    reuse(out, existed)
    args.conf, args.max_det = exp.thresholds(args.conf, args.max_det)  # None: the model's defaults
    writer.manifest.update(exp.meta)
    try:
        with Progress(len(entries), desc="explain") as bar:
            counts = run_explain(exp, entries, writer, args.conf, args.iou, classes, args.max_det, args.batch, bar)
    except BaseException:
        writer.fail()  # no manifest that looks like a finished run
        raise
    notes.warn_skipped(counts, out)
    n_err = counts["errors"]
    print(f"yolocam: {plural(counts['images'], 'image')}, {plural(counts['detections'], 'detection')}, "
          f"{plural(n_err, 'error')} -> {printable(out)}"
          + (f" (gallery: {printable(out / 'index.html')})" if args.html else ""))
    if counts["images"] and not counts["detections"]:
        notes.note(notes.nothing_found_hint(args.model, args.conf, classes, exp.names))
    if counts["images"] == 0:
        raise YolocamError(f"no image could be explained ({n_err} unusable input{'s' if n_err != 1 else ''})")
    return 0


def cmd_methods(args) -> int:
    """The CAM methods (one line each: scope, description) and the bundled models with their classes.

    Reads static tables (`cam/catalog.py`, `demo/models.py`): no torch is imported.
    """
    from ..cam import catalog
    from ..defaults import DEFAULT_METHOD
    from ..demo.models import DEFAULT_MODEL, MODEL_INFO

    print("methods (--method NAME):")
    width = max(map(len, catalog.method_names()))
    for name in catalog.method_names():
        canonical = catalog.ALIASES.get(name, name)
        scope, text = catalog.describe(name)
        if canonical != name:
            scope, text = "", f"alias of {canonical}"
        mark = " [default]" if name == DEFAULT_METHOD else ""
        print(f"  {name:<{width}}  {scope + ':' if scope else '':<21} {text}{mark}")
    print("  (per-box: the map shows the one object; class-wide: every object that shares its features;\n"
          "   image-level: one map for all boxes of an image; black-box: no gradients, any exported backend,\n"
          "   every box of an image from one set of masked passes)")
    print("bundled models (--model NAME):")
    for name, (what, classes) in MODEL_INFO.items():
        mark = " [default]" if name == DEFAULT_MODEL else ""
        print(f"  {name}: {what}; classes {', '.join(classes)}{mark}")
    return 0


def cmd_demo(args) -> int:
    if args.video:  # a generated clip of moving shapes, explained with tracks
        from .video_command import cmd_demo_video

        return cmd_demo_video(args)
    out, existed = out_dir(args.out, "demo", args.exist_ok)
    with owned(out, existed, args.exist_ok):
        return _demo_into(args, out, existed)


def _demo_into(args, out: Path, existed: bool) -> int:
    preflight(args)
    from . import notes
    from ..explain.explainer import Explainer
    from ..output.export import ExportWriter
    from ..output.files import atomic_write_bytes, encode_png
    from ..output.labels import conf_text
    from ..output.render import summary_grid
    from ..demo.evidence import make_evidence_scene
    from ..demo.models import EVIDENCE_MODELS, TASK_MODELS
    from ..demo.scenes import make_scene

    writer = ExportWriter(out, html=True, crops=True, append=False, save_format=args.save_format)
    exp = Explainer(model=args.model, method=args.method, target=args.target, layers=args.layers,
                    fuse=args.fuse, imgsz=args.imgsz, device=args.device, **drise_options(args))
    reuse(out, existed)
    scene = (make_evidence_scene if args.model in EVIDENCE_MODELS else make_scene)(args.seed)
    classifier = TASK_MODELS.get(args.model) == "classify"
    if classifier:  # a classifier sees one crop: the first shape in its middle
        from ..demo.task_labels import classify_crops

        crop, _, box = classify_crops(scene, args.seed)[0]
        scene = type(scene)(image=crop, boxes=box[None], classes=scene.classes[:1])
    image_path = out / "scene.png"
    try:
        writer.add_file("scene.png")
        atomic_write_bytes(image_path, encode_png(scene.image))
        if classifier and args.conf is None:  # no maps for the classes the model all but rules out
            args.conf = CLASSIFY_DEMO_CONF
            notes.note(f"classes of probability below {CLASSIFY_DEMO_CONF:g} get no map (--conf 0 shows them all)")
        args.conf, args.max_det = exp.thresholds(args.conf, args.max_det)  # None: the model's defaults
        [result] = exp.explain(str(image_path), conf=args.conf, max_det=args.max_det)
        writer.manifest.update(exp.meta)
        writer.add(result)
        writer.add_file("summary.png")
        atomic_write_bytes(out / "summary.png", encode_png(summary_grid(result)))
    except BaseException:
        writer.fail()
        raise
    writer.finish()
    found = ", ".join(f"{d.name} {conf_text(d.conf)}" for d in result.detections) or "nothing"
    print(printable(f"yolocam demo: scene {args.seed} ({plural(len(scene.boxes), 'object')}), "
                    f"model {exp.meta['model']}, "
                    f"method {exp.meta['method']}, target {exp.meta['target']}: found {found}"))
    if not result.detections:
        notes.note(notes.nothing_found_hint(args.model, args.conf, None, exp.names))
    print(f"  summary:  {printable(out / 'summary.png')}")
    print(f"  gallery:  {printable(out / 'index.html')}")
    print(f"  manifest: {printable(out / 'manifest.json')}")
    return 0


def cmd_val(args) -> int:
    from . import notes
    from .options import check_data_arg
    from ..output.cleanup import clear_previous
    from ..output.paths import inside

    out, existed = out_dir(args.out, "val", args.exist_ok)
    for sub in VAL_FOLDERS:
        if os.path.lexists(out / sub) and (inside(out, sub) is None or not (out / sub).is_dir()):
            raise YolocamError(f"{out / sub} is a symbolic link or a file; yolocam val writes its {sub}/ folder "
                               "there: remove it or choose another --out")
    check_data_arg(args.data)
    with owned(out, existed, args.exist_ok):
        preflight(args)  # before torch: the model file, then the device
        print(f"yolocam: {printable(notes.val_data_note(args))}")  # what it validates on, up front (stdout: stderr
        # keeps to warnings and the one error line)
        if existed:
            clear_previous(out / "worst")  # the worst-case gallery is an export folder; other files are replaced
        args.out = str(out)
        if args.ray is not None:
            from .ray_commands import val_on_ray

            return val_on_ray(args, drise_options(args))
        from ..evaluation.validation import main_val

        return int(main_val(args) or 0)


def cmd_bench(args) -> int:
    preflight(args)
    if args.method == "drise":
        from .bench_drise import main_drise_bench

        return int(main_drise_bench(args) or 0)
    from .bench import main_bench

    return int(main_bench(args) or 0)


# --------------------------------------------------------------------------- parser
def _add_model_args(p, method: bool = True,
                    imgsz_help: str = "default: the size the checkpoint was trained at, else 640") -> None:
    from ..defaults import DEFAULT_FUSE, DEFAULT_LAYERS, DEFAULT_METHOD, PRESETS

    p.add_argument("--model", default=None, help="checkpoint path, model YAML or demo name (default: demo-v8)")
    if method:
        p.add_argument("--method", type=method_name, default=None,
                       help=f"CAM method (default {DEFAULT_METHOD}; ssgradcam++ with --target mask); "
                            "'yolocam methods' lists them")
        p.add_argument("--target", type=target_name, default="class",
                       help="what each map explains: class (default: the class logit), conf, box, all, cluster; "
                            "contrast (the class logit minus the runner-up class's), contrast:NAME (minus that class's); "
                            "segmentation models: mask (the instance's mask logits); "
                            "pose models: keypoint:K (an index or a name, e.g. keypoint:left_elbow), keypoints")
        p.add_argument("--layers", type=layers_spec, default=DEFAULT_LAYERS,
                       help=f"layers explained: fine (the backbone's stride-4 stage), backbone, neck, head, several "
                            f"joined by '+', or indices like 15,18,21 (default {DEFAULT_LAYERS})")
        p.add_argument("--preset", choices=tuple(PRESETS), default=None,
                       help="a method, layers and fusion chosen together: stable (the default), evidence "
                            "(LayerCAM unfiltered: the sharpest peak on the deciding part, less stable), fast "
                            "(neck only); explicit --method/--layers/--fuse win")
        p.add_argument("--fuse", type=fuse_name, default=DEFAULT_FUSE,
                       help=f"how layers combine: gate (the finest layer where the coarser ones agree), sum, max, origin, "
                            f"aligned (default {DEFAULT_FUSE})")
        p.add_argument("--exact", action="store_true",
                       help="the exact replay: on a CPU the default replays each box on a window around it (the "
                            "box grown by max(64 px, half its side)); --exact replays it over the whole image")
        p.add_argument("--masks", type=positive_int, default=1000,
                       help="--method drise: random masks per image, shared by all its boxes (default 1000)")
        p.add_argument("--mask-cell", type=positive_int, default=None,
                       help="--method drise: mask grid cell in input pixels (default: long side / 16)")
        p.add_argument("--mask-keep", type=unit_float, default=0.5,
                       help="--method drise: probability a mask cell is kept (default 0.5)")
        p.add_argument("--mask-seed", type=int, default=0, help="--method drise: mask seed (default 0)")
        p.add_argument("--mask-batch", type=positive_int, default=None,
                       help="--method drise: masked images per forward pass; bounds memory (default 32 on CUDA, 8 on CPU)")
    p.add_argument("--imgsz", type=imgsz_value, default=None,
                   help=f"model input size in pixels, at most 8192 ({imgsz_help})")
    p.add_argument("--device", type=device_name, default=None, help="cpu, cuda:0, ... (default: the model's)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="yolocam", description="Per-detection Grad-CAM-family heatmaps for ultralytics YOLO.",
                     allow_abbrev=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("explain", help="explain every detection in images", allow_abbrev=False)
    p.add_argument("source", nargs="+", metavar="SOURCE",
                   help="image or video file, folder, glob, image/video URL, rtsp/rtmp/http stream, webcam index (0), "
                        "screen, or a .txt/.streams list (several allowed)")
    p.add_argument("--recursive", action="store_true", help="also take the images in folders' sub-folders")
    _add_model_args(p)
    p.add_argument("--conf", type=unit_float, default=None,
                   help="confidence threshold (default 0.25; classification models: least probability, default 0)")
    p.add_argument("--iou", type=unit_float, default=0.7, help="NMS IoU threshold (default 0.7)")
    p.add_argument("--classes", type=class_list, default=None, help="keep only these classes: 0,2 or names")
    p.add_argument("--max-det", type=positive_int, default=None,
                   help="detections per image (default 300; classification models: top classes, default 5)")
    p.add_argument("--batch", type=positive_int, default=1, help="images per model batch (default 1)")
    p.add_argument("--out", default=None, help=f"output folder (default: a new {RUNS_DIR / 'explain'}N)")
    p.add_argument("--exist-ok", action="store_true",
                   help="reuse an existing --out: first remove the files yolocam's previous run there wrote")
    p.add_argument("--html", action="store_true", help="also write the gallery index.html")
    p.add_argument("--crops", action=argparse.BooleanOptionalAction, default=None,
                   help="write each box's zoomed crop (box plus context); default: on with --html, whose "
                        "gallery shows them as the detections' cards")
    p.add_argument("--save-format", choices=SAVE_FORMATS, default="jpg",
                   help="overlays and crops as jpg (default: about 8x smaller) or png (lossless)")
    from .video_command import add_video_args

    add_video_args(p)
    add_ray_args(p, resume=True)
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("methods", help="list the CAM methods (one line each) and the bundled models")
    p.set_defaults(func=cmd_methods)

    p = sub.add_parser("demo", help="explain a generated scene with the bundled detector", allow_abbrev=False,
                       description="Explain a generated scene of shapes with a bundled detector; compare methods, "
                                   "targets and layers on it: yolocam demo --method gradcam --target box")
    _add_model_args(p)
    p.add_argument("--out", default=None, help=f"output folder (default: a new {RUNS_DIR / 'demo'}N)")
    p.add_argument("--exist-ok", action="store_true",
                   help="reuse an existing --out: first remove the files yolocam's previous run there wrote")
    p.add_argument("--seed", type=int, default=0, help="scene seed (default 0)")
    p.add_argument("--save-format", choices=SAVE_FORMATS, default="jpg",
                   help="overlays and crops as jpg (default: about 8x smaller) or png (lossless)")
    p.add_argument("--conf", type=unit_float, default=None,
                   help="confidence threshold (default 0.25; demo-cls: least probability, "
                        f"default {CLASSIFY_DEMO_CONF:g})")
    p.add_argument("--max-det", type=positive_int, default=None,
                   help="detections per image (default 300; demo-cls: top classes, default 5)")
    from .video_command import add_demo_video_args

    add_demo_video_args(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("val", help="explain what a validator sees (TP/FP, localisation metrics; detect, segment, "
                                   "pose and obb models)",
                       allow_abbrev=False)
    _add_model_args(p, imgsz_help="default: the model's training size")
    p.add_argument("--data", default=None,
                   help="dataset YAML (default: generated scenes labelled for the model's task)")
    p.add_argument("--conf", type=unit_float, default=0.25, help="confidence threshold (default 0.25)")
    p.add_argument("--iou", type=unit_float, default=0.7, help="NMS IoU threshold (default 0.7)")
    p.add_argument("--out", default=None, help=f"output folder (default: a new {RUNS_DIR / 'val'}N)")
    p.add_argument("--exist-ok", action="store_true",
                   help="reuse an existing --out: first remove the files yolocam's previous run there wrote")
    p.add_argument("--max-images", type=positive_int, default=None,
                   help="validate on at most this many images (default: all)")
    p.add_argument("--max-explanations", type=positive_int, default=None,
                   help="explain at most this many detections (default: all)")
    p.add_argument("--compare-methods", type=method_list, nargs="?", default=None, const="all",
                   help="compare methods: a comma list, or all (the default when given alone)")
    p.add_argument("--scenes", type=positive_int, default=None,
                   help="number of generated scenes when no --data is given (default: the validator's)")
    p.add_argument("--stability", action="store_true",
                   help="with --compare-methods: add JPEG-90 and 2-px-shift stability columns (three more "
                        "explanations per scene)")
    add_ray_args(p, resume=False)
    p.set_defaults(func=cmd_val)

    p = sub.add_parser("bench", help="time explanations against the number of boxes", allow_abbrev=False)
    _add_model_args(p, method=False, imgsz_help="default 640")
    from ..defaults import DEFAULT_METHOD

    p.add_argument("--method", type=method_name, default=DEFAULT_METHOD,
                   help=f"CAM method to time (default {DEFAULT_METHOD}; see 'yolocam methods')")
    p.add_argument("--boxes", type=int_list, default=[10, 50, 100], help="box counts (default 10,50,100)")
    p.add_argument("--repeats", type=positive_int, default=5,
                   help="timed runs per measurement; the median is reported (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs before timing (default 1)")
    p.add_argument("--memory-mb", type=positive_float, default=2048.0,
                   help="memory bound of the batched replay in MiB, as Explainer(memory_mb=...) (default 2048)")
    p.add_argument("--strategy", choices=("auto", "batched", "loop"), default="auto",
                   help="gradient strategy, as Explainer(strategy=...) (default auto: batched on CUDA, loop on CPU)")
    p.add_argument("--variants", default="abcde",
                   help="which of the variants a-e, x (exact=True) and f (preset fast) to time, e.g. 'bx' "
                        "(default abcde)")
    p.add_argument("--image", choices=("noise", "scene"), default="noise",
                   help="test image: noise with flat shapes (default), or a generated scene of labelled objects")
    p.add_argument("--masks", type=positive_int, default=256, help="--method drise: masks per image (default 256)")
    p.add_argument("--mask-batches", type=int_list, default=[8, 32],
                   help="--method drise: mask batch sizes to time, with their peak memory (default 8,32)")
    p.set_defaults(func=cmd_bench)

    from .export_command import add_export_demo_parser

    add_export_demo_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (see the module docstring)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a one-line error (2)
        return int(exc.code or 0)
    if getattr(args, "preset", None):  # the preset fills what was left at its default (as Explainer(preset=...))
        from ..defaults import preset_settings

        args.method, args.layers, args.fuse = preset_settings(args.preset, args.method, args.layers, args.fuse)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        with warnings_to_stderr():
            return args.func(args)
    except YolocamError as exc:
        print(f"yolocam: error: {printable(' '.join(str(exc).split()))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("yolocam: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the CLI's last line of defence
        if os.environ.get("YOLOCAM_DEBUG"):
            raise
        print(f"yolocam: unexpected error: {type(exc).__name__}: {printable(' '.join(str(exc).split()))} "
              "(set YOLOCAM_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1
