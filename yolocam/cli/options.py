"""The command line's option values: argparse validators (one-line errors), class and input resolution,
and how warnings reach the terminal. The validators and the path checks import no torch (names come from
the static `cam/catalog.py`), so a typo or a missing file is answered at once; `--help` stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
from pathlib import Path
from typing import Sequence

from ..errors import YolocamError
from .terminal import printable


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (`yolocam explain: error: ...`) and exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {printable(message)} (see '{self.prog} --help')\n")


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
    from ..cam.catalog import check_method

    return check_method(text)


@_typed
def method_list(text: str) -> list[str]:
    """Comma-separated method names, or `all` (every built-in gradient-family method, aliases and black-box
    methods left out)."""
    from ..cam.catalog import gradient_methods

    if text.strip() == "all":
        return gradient_methods()
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise YolocamError(f"expected a comma-separated list of methods, got {text!r}")
    return [method_name(n) for n in names]


@_typed
def target_name(text: str) -> str:
    from ..cam.catalog import check_target

    return check_target(text)


@_typed
def fuse_name(text: str) -> str:
    from ..cam.catalog import FUSIONS

    if text not in FUSIONS:
        raise YolocamError(f"unknown fuse {text!r}; expected one of {', '.join(FUSIONS)}")
    return text


@_typed
def layers_spec(text: str) -> str | list[int]:
    """`neck`, `head`, `backbone`, `fine`, several joined by '+' (`fine+neck`), or comma-separated layer
    indices such as `15,18,21`."""
    from ..cam.catalog import LAYER_SETS

    if all(name in LAYER_SETS for name in text.split("+")):
        return text
    parts = [p.strip() for p in text.split(",")]
    if not parts or not all(p.isdigit() for p in parts):
        raise YolocamError(f"unknown layers {text!r}; expected one of {', '.join(LAYER_SETS)} (or several "
                           "joined by '+', e.g. fine+neck) or comma-separated layer indices like 15,18,21")
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
def imgsz_value(text: str) -> int:
    """`--imgsz`: a positive integer up to `MAX_IMGSZ` (checked before anything is allocated)."""
    from ..defaults import MAX_IMGSZ

    digits = text.strip()
    if not (digits.isascii() and digits.isdigit()) or not 1 <= int(digits) <= MAX_IMGSZ:
        raise YolocamError(f"expected a positive integer of at most {MAX_IMGSZ} (pixels, long side), got {text!r}")
    return int(digits)


@_typed
def positive_float(text: str) -> float:
    """A finite positive number (`--memory-mb`)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise YolocamError(f"expected a finite positive number, got {text!r}")
    return value


DEVICES = "cpu, cuda, cuda:N, N (= cuda:N) or mps"  # = explain.checks.DEVICES


@_typed
def device_name(text: str) -> str:
    """`cpu`, `cuda`, `cuda:N`, `N` (= cuda:N) or `mps` (spelling only: `check_device_arg` asks torch whether
    the device exists, once the cheap checks passed)."""
    spec = text.strip().lower()
    if not (spec in ("cpu", "cuda", "mps") or spec.isdigit() or (spec.startswith("cuda:") and spec[5:].isdigit())):
        raise YolocamError(f"expected {DEVICES}, got {text!r}")
    return text


def check_device_arg(device: str | None) -> str | None:
    """`--device` as a torch device name, refused in one line when this machine lacks it (imports torch)."""
    if device is None:
        return None
    from ..explain.checks import check_device

    try:
        return str(check_device(device))
    except YolocamError as exc:
        raise YolocamError("--device: " + str(exc).replace("device 'cpu'", "--device cpu")
                           .removeprefix("device: ")) from None


def check_model_arg(model: str | None) -> None:
    """`--model` names something that can load, checked without torch: a bundled name (its weights present),
    a model YAML (a file here, or a bare name ultralytics may ship), or an existing checkpoint file or
    exported model (file or folder); the same one-line errors the loaders give."""
    from ..demo.models import DEFAULT_MODEL, DEMO_MODELS, demo_model_path

    if model is None or model in DEMO_MODELS:
        demo_model_path(model or DEFAULT_MODEL)
        return
    if Path(model).suffix in (".yaml", ".yml"):  # as model/adapter.py: a bare name may be one ultralytics ships
        if not os.path.exists(model) and (os.sep in model or "/" in model):
            raise YolocamError(f"model config not found: {Path(model)}")
        return
    if not os.path.exists(model):
        raise YolocamError(f"model file not found: {model}")


def preflight(args) -> None:
    """Before a command loads torch: its `--model` must exist (`check_model_arg`); then `--device` is asked
    about (that imports torch) and kept as torch names it."""
    check_model_arg(getattr(args, "model", None))
    if getattr(args, "device", None) is not None:
        args.device = check_device_arg(args.device)


def check_data_arg(data: str | None) -> None:
    """`yolocam val --data`: an existing dataset YAML file (checked without torch)."""
    if data is not None and not Path(data).is_file():
        raise YolocamError(f"data: dataset YAML not found: {data}")


def resolve_classes(spec: list[int | str] | None, names: dict[int, str]) -> list[int] | None:
    """Class indices for `--classes` (indices or names) against the model's `names`."""
    from ..explain.checks import resolve_classes as resolve

    return resolve(spec, names, what="--classes")


def resolve_inputs(sources: Sequence[str], recursive: bool = False) -> list[str]:
    """Image files for the SOURCE arguments; a missing path or a folder without images is an error.

    An existing path is taken as it is, even when its name holds glob characters (`scene[1].png`).
    """
    from ..inputs.images import IMAGE_SUFFIXES, resolve_source

    entries: list[str] = []
    for src in sources:
        if not any(ch in src for ch in "*?[") and not os.path.lexists(src):
            raise YolocamError(f"source not found: {src} (expected an image file, a folder or a glob)")
        found = resolve_source(src, recursive=recursive)
        if not found:
            raise YolocamError(f"no images in folder {src} (looked for {', '.join(IMAGE_SUFFIXES)})")
        entries.extend(found)
    return entries


@contextlib.contextmanager
def warnings_to_stderr():
    """While a command runs, the package's logged warnings go to stderr as `yolocam: warning: ...` lines;
    they and Python warnings (of any library) reach the terminal with control characters escaped."""
    import logging
    import warnings

    class Escaped(logging.Formatter):  # names and paths in a message reach the terminal escaped
        def format(self, record):
            return printable(super().format(record))

    def show_warning(message, category, filename, lineno, file=None, line=None):
        text = warnings.formatwarning(message, category, filename, lineno, line)
        with contextlib.suppress(OSError, AttributeError):
            (file or sys.stderr).write(printable(text, keep="\n"))

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(Escaped("yolocam: warning: %(message)s"))
    handler.setLevel(logging.WARNING)
    logger = logging.getLogger("yolocam")
    logger.addHandler(handler)
    shown, warnings.showwarning = warnings.showwarning, show_warning
    try:
        yield
    finally:
        warnings.showwarning = shown
        logger.removeHandler(handler)


def drise_options(args) -> dict:
    """The `--mask-*` options as `Explainer` keywords (used by `--method drise` only)."""
    return {"masks": args.masks, "cell": args.mask_cell, "keep": args.mask_keep, "seed": args.mask_seed,
            "mask_batch": args.mask_batch, "progress": None}


def explainer_from_args(args):
    """(the `Explainer` the explain commands build from their options, the `--classes` resolved against its
    names); the model notes are printed."""
    from ..explain.explainer import Explainer
    from . import notes

    exp = Explainer(model=args.model, method=args.method, target=args.target, layers=args.layers,
                    fuse=args.fuse, imgsz=args.imgsz, device=args.device, exact=getattr(args, "exact", False),
                    **drise_options(args))
    classes = resolve_classes(args.classes, exp.names)
    for line in notes.model_notes(args.model, exp.names, exp.adapter.task):
        notes.note(line)
    return exp, classes
