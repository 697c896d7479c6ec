"""The `yolocam` command line: bad input, exit codes, output folders, and a 20-scene run end to end."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import yolocam
from yolocam.cli import main
from yolocam.demo.models import WEIGHTS_DIR
from yolocam.output.progress import Progress
from yolocam.demo.scenes import CLASS_NAMES, make_scene

from test_gallery import Page, dump_dom  # the headless-browser helper

DEMO_WEIGHTS = WEIGHTS_DIR / "demo-v8.pt"


@pytest.fixture(scope="session")
def random_model(tmp_path_factory) -> str:
    """A YOLOv8n-shaped checkpoint with random weights and the scene class names (nothing downloaded)."""
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    model = DetectionModel("yolov8n.yaml", nc=len(CLASS_NAMES), verbose=False)
    model.names = dict(enumerate(CLASS_NAMES))
    path = tmp_path_factory.mktemp("model") / "random.pt"
    torch.save({"model": model}, path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_args(random_model) -> list[str]:
    """Options that make the random model fast and give it a few (meaningless) detections."""
    return ["--model", random_model, "--conf", "0.0001", "--imgsz", "64", "--max-det", "2"]


@pytest.fixture(scope="session")
def small_images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("small")
    for i in range(3):
        cv2.imwrite(str(folder / f"img{i}.png"), make_scene(i, size=(64, 80)).image)
    return folder


def run(argv, capsys) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "error" in lines[0]
    return lines[0]


def test_methods_lists_every_method_and_marks_the_default(capsys):
    rc, out, _ = run(["methods"], capsys)
    assert rc == 0
    methods = out.split("bundled models")[0].splitlines()[1:]  # one line per method: name, scope, description
    names = [line.split()[0] for line in methods if line[:2] == "  " and line[2] not in " ("]
    assert names == yolocam.list_methods()
    default = next(line for line in methods if line.split()[:1] == [yolocam.DEFAULT_METHOD])
    assert default.endswith("[default]") and "per-box" in default
    assert "alias of hirescam" in next(line for line in methods if line.split()[:1] == ["odam"])


@pytest.mark.parametrize("option,value,valid", [
    ("--method", "gradcam+++", ["gradcam", "ssgradcam++", "eigencam", "odam"]),
    ("--target", "logit", ["class", "conf", "box", "all", "cluster"]),
    ("--layers", "middle", ["neck", "head", "backbone", "15,18,21"]),
    ("--layers", "15,x", ["neck", "head", "backbone"]),
    ("--fuse", "mean", ["sum", "max", "origin", "aligned"]),
    ("--conf", "1.5", ["[0, 1]"]),
    ("--device", "tpu", ["cpu", "cuda"]),
])
def test_unknown_option_values_list_the_valid_ones(small_images, capsys, option, value, valid):
    rc, out, err = run(["explain", small_images, option, value], capsys)
    assert rc == 2
    line = one_error_line(err)
    assert option in line and value in line
    for name in valid:
        assert name in line, line


def test_unknown_class_lists_the_models_classes(small_images, tiny_args, tmp_path, capsys):
    rc, _, err = run(["explain", small_images, *tiny_args, "--classes", "hexagon", "--out", tmp_path / "o"], capsys)
    assert rc == 2
    line = one_error_line(err)
    assert "hexagon" in line and all(f"{i}={n}" in line for i, n in enumerate(CLASS_NAMES))
    assert not (tmp_path / "o").exists()  # a run that failed before any work leaves no folder


def test_missing_path(tmp_path, capsys):
    missing = tmp_path / "nope" / "x.png"
    rc, _, err = run(["explain", missing, "--out", tmp_path / "o"], capsys)
    assert rc == 2
    assert "not found" in one_error_line(err) and str(missing) in err
    assert not (tmp_path / "o").exists()


def test_empty_folder(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not an image")
    rc, _, err = run(["explain", empty, "--out", tmp_path / "o"], capsys)
    assert rc == 2
    line = one_error_line(err)
    assert "no images" in line and str(empty) in line


def test_unwritable_out_fails_before_any_work(small_images, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    # The model does not exist either: the folder check must come first to report the folder.
    rc, _, err = run(["explain", small_images, "--model", tmp_path / "missing.pt", "--out", blocker / "out"], capsys)
    assert rc == 2
    line = one_error_line(err)
    assert "not writable" in line and str(blocker / "out") in line


def test_corrupt_image_among_good_ones(small_images, tiny_args, tmp_path, capsys):
    folder = tmp_path / "mixed"
    shutil.copytree(small_images, folder)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage, not a JPEG")
    out = tmp_path / "out"
    rc, stdout, err = run(["explain", folder, *tiny_args, "--out", out], capsys)
    assert rc == 0, err
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(img["stem"] for img in manifest["images"]) == ["img0", "img1", "img2"]
    assert len(manifest["errors"]) == 1 and manifest["errors"][0]["path"] == str(folder / "broken.jpg")
    assert "broken.jpg" in err
    n = sum(len(img["detections"]) for img in manifest["images"])
    assert f"3 images, {n} detections, 1 error -> {out}" in stdout
    for img in manifest["images"]:
        for det in img["detections"]:
            assert (out / det["overlay"]).is_file()

    only_bad = tmp_path / "only_bad"
    only_bad.mkdir()
    (only_bad / "broken.png").write_bytes(b"nope")
    rc, _, err = run(["explain", only_bad, *tiny_args, "--out", tmp_path / "out2"], capsys)
    assert rc == 2 and "no image could be explained" in err
    assert json.loads((tmp_path / "out2" / "manifest.json").read_text())["errors"][0]["path"].endswith("broken.png")


def test_default_out_is_a_new_numbered_folder(small_images, tiny_args, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    image = small_images / "img0.png"
    for _ in range(2):
        rc, _, err = run(["explain", image, *tiny_args], capsys)
        assert rc == 0, err
    runs = tmp_path / "runs" / "yolocam"
    assert sorted(p.name for p in runs.iterdir()) == ["explain", "explain2"]
    rc, _, _ = run(["explain", image, "--model", tmp_path / "missing.pt"], capsys)
    assert rc == 2
    assert sorted(p.name for p in runs.iterdir()) == ["explain", "explain2"]  # no empty explain3 left behind


def test_val_and_bench_dispatch_parsed_arguments(monkeypatch, capsys, tmp_path):
    calls = []
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.pt").write_bytes(b"")  # --model must name an existing file (checked before torch loads)

    def recorder(status):
        return lambda args: calls.append(args) or status

    monkeypatch.setitem(sys.modules, "yolocam.evaluation.validation", types.SimpleNamespace(main_val=recorder(0)))
    monkeypatch.setitem(sys.modules, "yolocam.cli.bench", types.SimpleNamespace(main_bench=recorder(3)))
    rc = main(["val", "--model", "m.pt", "--imgsz", "96", "--layers", "15,18,21", "--compare-methods",
               "gradcam,odam", "--scenes", "7", "--max-images", "5"])
    assert rc == 0
    args = calls[-1]
    assert (args.model, args.imgsz, args.layers, args.compare_methods) == ("m.pt", 96, [15, 18, 21], ["gradcam", "odam"])
    assert (args.scenes, args.max_images, args.data, args.conf) == (7, 5, None, 0.25)
    assert (args.method, args.fuse) == (None, yolocam.DEFAULT_FUSE)  # None: the default for the target
    assert main(["val", "--model", "m.pt", "--compare-methods"]) == 0  # bare flag: every method, no aliases
    methods = calls[-1].compare_methods
    assert "ssgradcam++" in methods and "hirescam" in methods and "odam" not in methods
    assert main(["val", "--model", "m.pt"]) == 0 and calls[-1].compare_methods is None
    assert calls[-1].imgsz is None and calls[-1].layers == yolocam.DEFAULT_LAYERS  # the validator decides
    assert main(["bench", "--model", "m.pt", "--imgsz", "128", "--boxes", "5,20"]) == 3
    assert calls[-1].boxes == [5, 20] and calls[-1].repeats >= 1 and calls[-1].memory_mb > 0
    assert main(["bench", "--model", "m.pt"]) == 3 and calls[-1].boxes == [10, 50, 100]
    capsys.readouterr()
    assert main(["bench", "--boxes", "5,-1"]) == 2
    assert "--boxes" in one_error_line(capsys.readouterr().err)


def test_progress_bar_on_a_terminal_and_lines_elsewhere():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    tty, pipe, quiet = Tty(), io.StringIO(), io.StringIO()
    for stream, log_interval in ((tty, 0.0), (pipe, 0.0), (quiet, 60.0)):
        with Progress(3, desc="explain", stream=stream, interval=0.0, log_interval=log_interval) as bar:
            for _ in range(3):
                bar.update(1, detections=2)
    lines = pipe.getvalue().splitlines()  # off a terminal: plain lines, no carriage returns or escapes
    assert len(lines) >= 2 and "\r" not in pipe.getvalue() and "\x1b" not in pipe.getvalue()
    assert lines[0].startswith("explain: 1/3 images (33%)") and "left" in lines[0]
    assert lines[-1].startswith("explain: 3/3 images (100%)") and "detections=2" in lines[-1]
    assert quiet.getvalue() == ""  # shorter than log_interval: the command's summary line is enough
    text = tty.getvalue()  # a tqdm bar
    assert "3/3" in text and "100%" in text and "detections=2" in text and text.endswith("\n")


@pytest.fixture(scope="session")
def twenty_scenes(tmp_path_factory) -> tuple[Path, list]:
    folder = tmp_path_factory.mktemp("scenes")
    scenes = [make_scene(100 + i) for i in range(20)]
    for i, s in enumerate(scenes):
        cv2.imwrite(str(folder / f"scene_{i:02d}.png"), s.image)
    return folder, scenes


def test_twenty_scenes_end_to_end(twenty_scenes, random_model, tmp_path, capsys):
    folder, scenes = twenty_scenes
    out = tmp_path / "out"
    if DEMO_WEIGHTS.is_file():
        model_args = ["--max-det", "5"]  # the bundled detector with its defaults (fewer boxes: a faster test)
    else:
        model_args = ["--model", random_model, "--conf", "0.0001", "--imgsz", "128", "--max-det", "3"]
    rc, stdout, err = run(["explain", folder, *model_args, "--out", out, "--html", "--batch", "4"], capsys)
    assert rc == 0, err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["errors"] == [] and len(manifest["images"]) == 20
    assert manifest["method"] == yolocam.DEFAULT_METHOD and manifest["layers"] == yolocam.DEFAULT_LAYERS
    total = 0
    for i, (img, scene) in enumerate(zip(manifest["images"], scenes)):
        assert img["stem"] == f"scene_{i:02d}" and img["path"] == str(folder / f"scene_{i:02d}.png")
        h, w = scene.image.shape[:2]
        assert (img["height"], img["width"]) == (h, w)
        dets = img["detections"]
        total += len(dets)
        pictures = sorted(p.name for p in (out / img["stem"]).iterdir() if p.suffix in (".png", ".jpg"))
        assert pictures == sorted(Path(d["overlay"]).name for d in dets)  # one overlay per detection, no more
        assert all(name.endswith(".jpg") for name in pictures)  # the CLI's default --save-format
        for d in dets:
            assert cv2.imread(str(out / d["overlay"])).shape == (h, w, 3)
            assert CLASS_NAMES[d["cls"]] == d["name"]
        with np.load(out / img["heatmaps"]) as npz:
            if "image_size" in npz:  # compact maps (the letterboxed image's content), full size on loading
                assert tuple(npz["image_size"]) == (h, w) and len(npz["heatmaps"]) == len(dets)
                assert npz["heatmaps"].shape[1] * npz["heatmaps"].shape[2] < h * w
            else:
                assert npz["heatmaps"].shape == (len(dets), h, w)
            assert np.isfinite(npz["heatmaps"]).all()
            assert npz["heatmaps"].min(initial=0) >= 0 and npz["heatmaps"].max(initial=1) <= 1
            np.testing.assert_allclose(npz["boxes"], np.array([d["box"] for d in dets]).reshape(-1, 4), rtol=1e-5)
            np.testing.assert_array_equal(npz["classes"], [d["cls"] for d in dets])
            np.testing.assert_allclose(npz["scores"], [d["conf"] for d in dets], rtol=1e-5)
            assert list(npz["scores"]) == sorted(npz["scores"], reverse=True)
    assert total >= 10  # random weights: 3 per image; the demo detector: scenes hold 1-8 shapes each
    assert f"20 images, {total} detections, 0 errors -> {out}" in stdout

    page = Page(dump_dom(out / "index.html", "", tmp_path / "profile"))
    assert len(page.cards) == total and len(page.visible()) == total
    assert len(page.images) == total and all(i.get("data-loaded") == "1" for i in page.images)
    names = [d["name"] for img in manifest["images"] for d in img["detections"]]
    top = max(set(names), key=names.count)
    page = Page(dump_dom(out / "index.html", f"class={top}", tmp_path / "profile"))
    assert len(page.visible()) == names.count(top)
    assert all(c["data-name"] == top for c in page.visible())


def test_console_script_is_installed(small_images, tiny_args, tmp_path):
    exe = shutil.which("yolocam")
    assert exe is not None, "the yolocam console script is not installed (pip install -e .)"
    out = tmp_path / "cs"
    proc = subprocess.run([exe, "explain", str(small_images / "img1.png"), *tiny_args, "--out", str(out)],
                          capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr
    assert f"-> {out}" in proc.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert [img["stem"] for img in manifest["images"]] == ["img1"]


def test_cpu_folder_run_leaves_the_writer_a_core(small_images, tiny_args, tmp_path, capsys, monkeypatch):
    """While a folder is explained on the CPU, torch runs one thread fewer; the setting comes back."""
    seen = []
    iter_explain = yolocam.Explainer.iter_explain

    def spy(self, *args, **kwargs):
        seen.append(torch.get_num_threads())
        yield from iter_explain(self, *args, **kwargs)

    monkeypatch.setattr(yolocam.Explainer, "iter_explain", spy)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        rc, _, err = run(["explain", small_images, *tiny_args, "--out", tmp_path / "out"], capsys)
        assert rc == 0, err
        assert seen == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
