"""Answers at once (issue 26, item 4): a bad path or argument is refused in one line before torch or
ultralytics is imported (checked as `--help` is: a fresh interpreter, `python -X importtime`); the static
name tables the checks use match the registries; `yolocam val` says up front what it validates on and
`--compare-methods` shows its progress; the no-detections hint never suggests a higher --conf."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
import types

import cv2
import numpy as np
import pytest

from yolocam.cli import main
from yolocam.errors import YolocamError
from yolocam.cli.notes import COMPARE_SCENES, VAL_SCENES, nothing_found_hint, val_data_note

HEAVY = {"torch", "ultralytics", "torchvision"}


def run_fresh(argv: list[str], cwd) -> tuple[int, str, set[str]]:
    """(exit status, stderr without the import lines, top-level packages imported) of `yolocam ARGV`."""
    code = f"import sys; from yolocam.cli import main; sys.exit(main({argv!r}))"
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=cwd)
    mods = {m.group(1).strip().split(".")[0]
            for m in re.finditer(r"^import time:\s+\d+ \|\s+\d+ \|(.*)$", proc.stderr, re.M)}
    err = "\n".join(line for line in proc.stderr.splitlines() if not line.startswith("import time:"))
    return proc.returncode, err, mods


@pytest.fixture(scope="module")
def place(tmp_path_factory):
    root = tmp_path_factory.mktemp("fast")
    cv2.imwrite(str(root / "img.png"), np.zeros((32, 32, 3), np.uint8))
    (root / "a_file").write_text("x")
    (root / "full").mkdir()
    (root / "full" / "x.txt").write_text("x")
    return root


CASES = [  # argv (img.png: an image that exists), what the one line must say
    (["explain", "missing.png"], "source not found: missing.png"),
    (["explain", "missing.mp4"], "video not found: missing.mp4"),
    (["explain", "img.png", "--method", "gradcam+++"], "unknown method 'gradcam+++'"),
    (["explain", "img.png", "--target", "logit"], "unknown target 'logit'"),
    (["explain", "img.png", "--layers", "middle"], "unknown layers 'middle'"),
    (["explain", "img.png", "--fuse", "mean"], "unknown fuse 'mean'"),
    (["explain", "img.png", "--device", "tpu"], "got 'tpu'"),
    (["explain", "img.png", "--model", "missing.pt", "--out", "o"], "model file not found: missing.pt"),
    (["explain", "img.png", "--model", "cfg/missing.yaml", "--out", "o"], "model config not found"),
    (["explain", "img.png", "--out", "a_file"], "is a file, not a folder"),
    (["explain", "img.png", "--out", "full"], "already exists and is not empty"),
    (["explain", "img.png", "--out", "a_file/sub"], "not writable"),
    (["demo", "--model", "missing.pt", "--out", "o"], "model file not found: missing.pt"),
    (["demo", "--method", "nope"], "unknown method 'nope'"),
    (["val", "--model", "missing.pt", "--out", "o"], "model file not found: missing.pt"),
    (["val", "--data", "missing.yaml", "--out", "o"], "dataset YAML not found: missing.yaml"),
    (["val", "--compare-methods", "gradcam,nope"], "unknown method 'nope'"),
    (["bench", "--model", "missing.pt"], "model file not found: missing.pt"),
]


@pytest.mark.parametrize("argv, says", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_bad_paths_and_arguments_are_refused_before_torch_loads(place, argv, says):
    rc, err, mods = run_fresh(argv, place)
    assert rc == 2, err
    [line] = err.strip().splitlines()
    assert "error:" in line and says in line, line
    assert not HEAVY & mods, sorted(HEAVY & mods)
    assert not (place / "o").exists()  # a run refused up front leaves no folder


def test_the_static_name_tables_match_the_registries():
    import yolocam
    from yolocam.cam import catalog
    from yolocam.cam.fusion import FUSIONS
    from yolocam.cam.methods import get_method
    from yolocam.inputs import streams
    from yolocam.model.layers import LAYER_SETS
    from yolocam.model.targets import TARGETS, get_target
    from ultralytics.data.utils import IMG_FORMATS, VID_FORMATS

    assert catalog.TARGET_NAMES == tuple(TARGETS) and catalog.FUSIONS == FUSIONS
    assert catalog.LAYER_SETS == LAYER_SETS
    assert (streams.IMG_FORMATS, streams.VID_FORMATS) == (set(IMG_FORMATS), set(VID_FORMATS))
    assert catalog.gradient_methods() == list(dict.fromkeys(
        get_method(m).name for m in yolocam.list_methods() if not get_method(m).black_box))
    for spec in (*catalog.TARGET_NAMES, "keypoints", "keypoint:0", "contrast"):  # what passes here loads there
        assert catalog.check_target(spec) == spec
        get_target(spec)
    for bad in ("logit", "keypoint", "contrastive"):  # and what is refused here is refused there too
        with pytest.raises(yolocam.YolocamError, match="unknown target"):
            catalog.check_target(bad)
        with pytest.raises(yolocam.YolocamError):
            get_target(bad)


def test_the_device_is_checked_once_the_cheap_checks_passed():
    from yolocam.cli.options import check_device_arg

    assert check_device_arg("CPU") == "cpu" and check_device_arg(None) is None
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(YolocamError, match="--device: .*CUDA is not available"):
            check_device_arg("cuda:0")


def test_val_says_what_it_validates_on(monkeypatch, capsys, tmp_path):
    from yolocam.evaluation.compare import compare_methods
    from yolocam.evaluation.validation import default_dataset

    assert inspect.signature(default_dataset).parameters["scenes"].default == VAL_SCENES
    assert inspect.signature(compare_methods).parameters["scenes"].default == COMPARE_SCENES
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.pt").write_bytes(b"")
    (tmp_path / "d.yaml").write_text("path: .\n")
    monkeypatch.setitem(sys.modules, "yolocam.evaluation.validation", types.SimpleNamespace(main_val=lambda a: 0))
    notes = []
    for argv in (["val", "--model", "m.pt"], ["val", "--model", "m.pt", "--data", "d.yaml"],
                 ["val", "--model", "m.pt", "--max-images", "5"],
                 ["val", "--model", "m.pt", "--compare-methods", "gradcam,odam", "--scenes", "4"]):
        assert main(argv) == 0
        notes.append(capsys.readouterr().out)  # on stdout: stderr keeps to warnings and errors
    assert f"validating on {VAL_SCENES} generated scenes" in notes[0] and "pass --data for your own" in notes[0]
    assert "validating on the dataset d.yaml" in notes[1]
    assert "at most 5 of them" in notes[2]
    assert "comparing 2 methods on 4 generated scenes" in notes[3] and "progress" in notes[3]
    one = types.SimpleNamespace(compare_methods=None, data=None, scenes=1, max_images=None)
    assert "on 1 generated scene labelled" in val_data_note(one)


def test_compare_methods_shows_progress_per_method(capsys):
    from yolocam.evaluation.compare import compare_methods
    from yolocam.output import progress

    lines = []
    real = progress.Progress

    class Recorded(real):  # every line it writes, as off a terminal with no interval
        def __init__(self, *a, **kw):
            super().__init__(*a, **dict(kw, log_interval=0.0))

        def _write(self, text):
            lines.append(text)
            self._lines += 1

    progress.Progress = Recorded
    try:
        compare_methods("demo-v8", scenes=1, imgsz=160, methods=["gradcam", "hirescam"], steps=2, faithful=1,
                        progress=None)
    finally:
        progress.Progress = real
    assert any("compare: 1/2" in line and "method=gradcam" in line for line in lines), lines
    assert any("compare: 2/2" in line and "method=hirescam" in line for line in lines), lines


@pytest.mark.parametrize("conf, suggested", [(0.25, "--conf 0.05"), (0.03, "--conf 0.01"), (0.01, None),
                                             (0.001, None)])
def test_the_hint_never_suggests_a_higher_conf(conf, suggested):
    hint = nothing_found_hint("best.pt", conf)
    if suggested:
        assert f"e.g. {suggested})" in hint
    else:
        assert "e.g." not in hint and f"--conf {conf:g}, already a low threshold" in hint
