"""`yolocam export-demo NAME`: a bundled demo model exported by ultralytics' own exporter (offline).

Explaining an exported model (`--model demo-v8.onnx --method drise`) needs the file first; this writes it:
the bundled weights are copied into a temporary folder beside the target (the package's own file is left
as it is) and exported there with `YOLO.export`, then the file is renamed into place. Nothing is downloaded
or installed: a format whose package is missing is refused in one line, and ultralytics' ONNX simplifier
(onnxslim, which it would pip-install) is not used. Nothing here imports torch until the export starts.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from ..errors import YolocamError
from .terminal import printable

# format -> (file suffix, packages it needs, the extra that installs them, export keywords)
FORMATS = {
    "onnx": (".onnx", ("onnx",), "yolocam[onnx]", {"dynamic": True, "simplify": False}),
    "torchscript": (".torchscript", (), "", {}),
}


def add_export_demo_parser(sub) -> None:
    from ..demo.models import DEFAULT_MODEL, list_models
    from .options import positive_int

    p = sub.add_parser("export-demo", allow_abbrev=False,
                       help="export a bundled demo model (ONNX, TorchScript) to explain it as an exported model",
                       description="Export a bundled demo model with ultralytics' exporter, offline: "
                                   "yolocam export-demo demo-v8 && yolocam explain IMG --model demo-v8.onnx "
                                   "--method drise")
    p.add_argument("name", nargs="?", default=DEFAULT_MODEL, choices=list_models(), metavar="NAME",
                   help=f"the bundled model ({', '.join(list_models())}; default {DEFAULT_MODEL})")
    p.add_argument("--format", choices=tuple(FORMATS), default="onnx", help="export format (default onnx)")
    p.add_argument("--out", default=".", help="folder to write NAME.onnx (NAME.torchscript) into (default: here)")
    p.add_argument("--imgsz", type=positive_int, default=None,
                   help="export size (default: the model's training size; ONNX exports are dynamic, any size runs)")
    p.add_argument("--exist-ok", action="store_true", help="replace the file if it exists")
    p.set_defaults(func=cmd_export_demo)


def cmd_export_demo(args) -> int:
    suffix, needs, extra, options = FORMATS[args.format]
    for module in needs:  # before torch loads: one line at once
        if importlib.util.find_spec(module) is None:
            raise YolocamError(f"--format {args.format} needs the Python package {module!r}, which is not installed "
                               f'(pip install "{extra}"); yolocam never installs packages itself')
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise YolocamError(f"--out {out} is a file, not a folder")
    target = out / f"{args.name}{suffix}"
    if os.path.lexists(target) and not args.exist_ok:
        raise YolocamError(f"{target} already exists; pass --exist-ok to replace it or choose another --out")
    if target.is_symlink() or (target.exists() and not target.is_file()):
        raise YolocamError(f"refusing to replace {target}: it is not a plain file")
    from ..demo.models import demo_model_path

    source = demo_model_path(args.name)
    imgsz = _export(source, args.name, out, target, args.format, args.imgsz, options)
    run = f"yolocam explain IMG --model {target} --method drise"
    print(printable(f"yolocam: {args.name} exported as {args.format} (imgsz {imgsz}"
                    + (", dynamic" if options.get("dynamic") else "") + f") -> {target}; explain it with: {run}"))
    if args.format == "onnx" and importlib.util.find_spec("onnxruntime") is None:
        from . import notes

        notes.note('running it needs onnxruntime too (pip install "yolocam[onnx]")')
    return 0


def _export(source: Path, name: str, out: Path, target: Path, fmt: str, imgsz, options: dict) -> int:
    """Export a copy of `source` inside a temporary folder in `out`; returns the export size."""
    import logging
    import shutil
    import tempfile
    import warnings

    from ultralytics import YOLO
    from ultralytics.utils import LOGGER

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".yolocam-export-", dir=out) as tmp:
        weights = Path(tmp) / f"{name}.pt"
        shutil.copyfile(source, weights)
        model = YOLO(str(weights))
        size = int(imgsz or model.overrides.get("imgsz") or model.ckpt.get("train_args", {}).get("imgsz") or 640)
        level = LOGGER.level
        LOGGER.setLevel(logging.ERROR)  # ultralytics' export log; yolocam says what it wrote in one line
        try:
            with warnings.catch_warnings():  # torch's notices about tracing and its legacy ONNX exporter
                warnings.simplefilter("ignore")
                written = model.export(format=fmt, imgsz=size, verbose=False, **options)
        except Exception as exc:  # noqa: BLE001 - the exporter's failure, in one line
            raise YolocamError(f"exporting {name} as {fmt} failed: {type(exc).__name__}: {' '.join(str(exc).split())}"
                               ) from None
        finally:
            LOGGER.setLevel(level)
        if not written or not Path(written).is_file():
            raise YolocamError(f"exporting {name} as {fmt} wrote no file")
        os.replace(written, target)
    return size
