"""The command line answers `--help` and `yolocam methods` without importing torch, its help texts
say what every option does and its default, and a run tells which model it uses and why it may
have found nothing."""

from __future__ import annotations

import re
import subprocess
import sys

import cv2
import numpy as np
import pytest

from yolocam.cli import main
from yolocam.cli.notes import model_notes, nothing_found_hint

COMMANDS = ["", "explain", "val", "bench", "demo", "methods"]


def imported_modules(code: str) -> tuple[set[str], str]:
    """Top-level packages a fresh interpreter imports while running `code` (python -X importtime)."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    mods = {m.group(1).strip().split(".")[0]
            for m in re.finditer(r"^import time:\s+\d+ \|\s+\d+ \|(.*)$", proc.stderr, re.M)}
    return mods, proc.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_help_does_not_import_torch(command):
    argv = [command, "--help"] if command else ["--help"]
    mods, out = imported_modules(f"from yolocam.cli import main; main({argv!r})")
    assert "usage: yolocam" in out
    assert "yolocam" in mods and not {"torch", "ultralytics", "torchvision"} & mods, sorted(mods)


def test_methods_lists_descriptions_and_models_without_torch():
    mods, out = imported_modules("from yolocam.cli import main; main(['methods'])")
    assert not {"torch", "ultralytics"} & mods
    import yolocam
    from yolocam.cam import catalog
    from yolocam.cam.methods import get_method

    assert catalog.method_names() == yolocam.list_methods()  # the static table matches the registry
    for name in yolocam.list_methods():
        line = next(l for l in out.splitlines() if l.split() and l.split()[0] == name)
        method = get_method(name)
        if method.name != name:
            assert f"alias of {method.name}" in line
            continue
        scope, text = catalog.describe(name)
        assert text in line and scope in line and method.description == text
        assert (scope == catalog.IMAGE_LEVEL) == (not method.needs_gradients and not method.black_box)
        assert (scope == catalog.PER_BOX) == (method.instance_specific and method.needs_gradients)
        assert (scope == catalog.BLACK_BOX) == method.black_box
    assert "[default]" in next(l for l in out.splitlines() if l.split()[:1] == [yolocam.DEFAULT_METHOD])
    from yolocam.demo.models import MODEL_INFO

    for model in yolocam.list_models():
        line = next(l for l in out.splitlines() if l.strip().startswith(model + ":"))
        assert ", ".join(MODEL_INFO[model][1]) in line
    assert "circle, square, triangle, cross" in out and "dot, ring, plus" in out


def test_help_texts_describe_every_option_with_its_default(capsys):
    import argparse

    from yolocam.cli.main import build_parser

    [sub] = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    for command, parser in sub.choices.items():
        for action in parser._actions:
            assert action.help, (command, action.option_strings or action.dest)  # every option says what it does
    assert main(["val", "--help"]) == 0
    val = " ".join(capsys.readouterr().out.split())
    for expected in ("confidence threshold (default 0.25)", "NMS IoU threshold (default 0.7)",
                     "validate on at most this many images (default: all)"):
        assert expected in val
    assert main(["bench", "--help"]) == 0
    bench = " ".join(capsys.readouterr().out.split())
    from yolocam.defaults import DEFAULT_METHOD

    for expected in (f"CAM method to time (default {DEFAULT_METHOD}", "the median is reported (default 5)",
                     "untimed runs before timing (default 1)", "(default 2048)"):
        assert expected in bench
    assert main(["demo", "--help"]) == 0
    demo = capsys.readouterr().out
    for flag in ("--method", "--target", "--layers", "--fuse", "--model"):
        assert flag in demo


def test_notes_name_the_model_and_the_reasons_for_nothing_found():
    [line] = model_notes(None)
    assert "demo-v8" in line and "the default" in line and "circle, square, triangle, cross" in line
    [line] = model_notes("yolov8n.yaml")
    assert "random weights" in line
    [line] = model_notes("best.pt", {0: "person", 1: "car"})
    assert "person, car" in line
    hint = nothing_found_hint("yolov8n.yaml", 0.5, [1], {0: "person", 1: "car"})
    assert "--conf 0.5" in hint and "--classes keeps only car" in hint and "random weights" in hint
    assert "demo detector knows only" in nothing_found_hint(None, 0.25)


def test_explain_says_which_model_and_why_nothing_was_found(tmp_path, capsys):
    image = tmp_path / "blank.png"
    cv2.imwrite(str(image), np.full((64, 64, 3), 127, np.uint8))
    rc = main(["explain", str(image), "--out", str(tmp_path / "out"), "--conf", "0.99"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "model demo-v8 (the default" in err
    assert "no detections; possible reasons: every score was below --conf 0.99" in err
