"""The command line's option values: argparse validators (one-line errors), class and input resolution,
and how warnings reach the terminal. Nothing here imports torch before a value needs it (`--help` stays fast).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
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
    from ..cam.methods import get_method

    get_method(text)
    return text


@_typed
def method_list(text: str) -> list[str]:
    """Comma-separated method names, or `all` (every registered gradient-family method, aliases and black-box
    methods left out)."""
    from ..cam.methods import get_method, list_methods

    if text.strip() == "all":
        return list(dict.fromkeys(get_method(m).name for m in list_methods() if not get_method(m).black_box))
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
    """`neck`, `head`, `backbone`, `fine`, several joined by '+' (`fine+neck`), or comma-separated layer
    indices such as `15,18,21`."""
    from ..model.layers import LAYER_SETS

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


@_typed
def device_name(text: str) -> str:
    """`cpu`, `cuda`, `cuda:N`, `N` (= cuda:N) or `mps`; refused when that device is not available here."""
    from ..explain.checks import check_device

    try:
        return str(check_device(text))
    except YolocamError as exc:
        raise YolocamError(str(exc).replace("device 'cpu'", "--device cpu").removeprefix("device: ")) from None


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
