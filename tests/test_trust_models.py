"""Models and names a careless or hostile user may hand yolocam (issue 21, items 6, 8, 10 and 13): the
checkpoint loaded is exactly the file named, a class name selects every class of that name, YOLOv3
configs explain (relative `from` indices), open-vocabulary and RT-DETR models are refused in one line,
and control characters in names reach the terminal escaped."""

import json
import warnings

import cv2
import numpy as np
import pytest
import torch

from yolocam import Explainer
from yolocam.cli.main import main
from yolocam.cli.options import warnings_to_stderr
from yolocam.cli.terminal import printable
from yolocam.errors import YolocamError
from yolocam.explain.checks import resolve_classes
from yolocam.explain.explainer import resolve_model
from yolocam.model.adapter import ModelAdapter, layer_inputs
from ultralytics.nn.tasks import DetectionModel

from conftest import build_model

RAW = ("\x1b", "\x07")


def _save(model, path) -> None:
    torch.save({"model": model, "train_args": {"task": "detect"}}, path)


def _checkpoint(path, nc: int) -> None:
    """A random-weight yolov8n checkpoint with `nc` classes named c0 ..."""
    torch.manual_seed(nc)
    model = DetectionModel("yolov8n.yaml", nc=nc, verbose=False)
    model.names = {i: f"c{i}" for i in range(nc)}
    _save(model, path)


# ------------------------------------------------ item 6: exactly the named checkpoint file
def test_a_quoted_checkpoint_name_loads_that_file_not_its_unquoted_twin(tmp_path):
    named, twin = tmp_path / "a'b.pt", tmp_path / "ab.pt"
    _checkpoint(named, 2)
    _checkpoint(twin, 5)  # ultralytics' asset lookup drops the quote and would open this one
    assert ModelAdapter(str(named)).nc == 2
    wrapper, _, _ = resolve_model(str(named))  # the ultralytics.YOLO that validate and compare use
    assert int(wrapper.model.model[-1].nc) == 2 and wrapper.ckpt_path == str(named)
    twin.unlink()
    assert ModelAdapter(str(named)).nc == 2  # alone it loads too (was: "No such file .../ab.pt")
    assert int(resolve_model(str(named))[0].model.model[-1].nc) == 2


def test_a_yolov5_checkpoint_name_is_not_renamed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative name without a 'u' (ultralytics renames yolov5n.pt -> yolov5nu.pt)
    _checkpoint(tmp_path / "yolov5n.pt", 2)
    _checkpoint(tmp_path / "yolov5nu.pt", 4)
    assert ModelAdapter("yolov5n.pt").nc == 2
    assert int(resolve_model("yolov5n.pt")[0].model.model[-1].nc) == 2


def test_the_cli_explains_with_the_quoted_checkpoint_and_records_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _checkpoint(tmp_path / "a'b.pt", 2)
    _checkpoint(tmp_path / "ab.pt", 5)
    cv2.imwrite(str(tmp_path / "img.png"), np.full((64, 64, 3), 90, np.uint8))
    assert main(["explain", "img.png", "--model", "a'b.pt", "--imgsz", "64", "--out", "out"]) == 0
    assert "classes c0, c1\n" in capsys.readouterr().err
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["model"] == "a'b.pt"


def test_a_missing_checkpoint_is_one_line(tmp_path):
    with pytest.raises(YolocamError, match="model file not found"):
        ModelAdapter(str(tmp_path / "a'b.pt"))
    with pytest.raises(YolocamError, match="model file not found"):
        resolve_model(str(tmp_path / "a'b.pt"))


# ------------------------------------------------ item 8: a name selects every class of that name
NAMES = {0: "shape", 1: "other", 2: "shape"}


def test_a_duplicate_class_name_selects_every_class_of_that_name():
    assert resolve_classes("shape", NAMES) == [0, 2]
    assert resolve_classes(["other", "shape"], NAMES) == [1, 0, 2]
    assert resolve_classes(["shape", 2, "0"], NAMES) == [0, 2]  # each class once
    assert resolve_classes(" shape ", NAMES) == [0, 2]
    with pytest.raises(YolocamError, match="unknown class 'shapes'"):
        resolve_classes("shapes", NAMES)


@pytest.fixture(scope="module")
def duplicate_names_model():
    model = build_model("yolov8n.yaml", nc=3)
    model.names = dict(NAMES)
    return model


def test_explain_by_a_duplicate_name_keeps_the_boxes_of_both_classes(duplicate_names_model, image):
    exp = Explainer(duplicate_names_model, method="gradcam", imgsz=64)
    by_name = exp.explain(image, conf=0.3, classes="shape")[0].detections
    by_ids = exp.explain(image, conf=0.3, classes=[0, 2])[0].detections
    assert {d.cls for d in by_name} == {0, 2}  # was: only class 2
    assert [(d.cls, d.box) for d in by_name] == [(d.cls, d.box) for d in by_ids]


# ------------------------------------------------ item 10: YOLOv3 (relative `from`), refused kinds
def test_negative_from_indices_count_back_from_the_layer():
    assert layer_inputs(-1, 7) == [6]
    assert layer_inputs(-2, 7) == [5]
    assert layer_inputs([-1, 8], 12) == [11, 8]
    assert layer_inputs([-3, -1, 2], 10) == [7, 9, 2]


@pytest.mark.parametrize("cfg", ["yolov3-tiny.yaml", "yolov3.yaml", "yolov3-spp.yaml"])
def test_yolov3_layers_run_as_ultralytics_runs_them(cfg):
    from ultralytics.nn.tasks import yaml_model_load

    torch.manual_seed(0)
    spec = yaml_model_load(cfg)
    spec.update(depth_multiple=0.33, width_multiple=0.125)  # the same layers, thinner: fast
    model = DetectionModel(spec, nc=3, verbose=False).eval()
    adapter = ModelAdapter(model)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)[0]  # (1, 4 + nc, A): xywh boxes and class probabilities
        head = adapter.forward(x)[1]
    xy, wh = expected[0, :2].t(), expected[0, 2:4].t()
    torch.testing.assert_close(head.boxes[0], torch.cat((xy - wh / 2, xy + wh / 2), 1), atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(head.logits[0].sigmoid(), expected[0, 4:].t(), atol=1e-5, rtol=1e-4)


def test_yolov3_tiny_explains_the_boxes_model_predict_finds(tmp_path, image):
    from ultralytics import YOLO

    model = build_model("yolov3-tiny.yaml")
    _save(model, tmp_path / "v3t.pt")
    result = Explainer(model, imgsz=64).explain(image, conf=0.2, max_det=5)[0]
    pred = YOLO(str(tmp_path / "v3t.pt"), task="detect").predict(image, imgsz=64, conf=0.2, max_det=5,
                                                                verbose=False)[0]
    assert len(result.detections) == len(pred.boxes) > 0
    np.testing.assert_allclose([d.box for d in result.detections], pred.boxes.xyxy.numpy(), atol=1e-3)
    assert [d.cls for d in result.detections] == pred.boxes.cls.int().tolist()
    assert all(np.isfinite(d.heatmap).all() and d.heatmap.max() > 0 for d in result.detections)


@pytest.mark.parametrize("cfg", ["yolov8s-world.yaml", "yolov8s-worldv2.yaml", "yoloe-v8s.yaml", "yoloe-11s.yaml",
                                 "yoloe-v8s-seg.yaml"])
def test_open_vocabulary_configs_are_refused_up_front(cfg):
    with pytest.raises(YolocamError, match=r"^open-vocabulary models \(YOLO-World, YOLOE\) are not supported: "):
        Explainer(cfg, imgsz=64)


def test_open_vocabulary_model_objects_are_refused():
    from ultralytics.nn.tasks import WorldModel, YOLOEModel

    # built from their YAMLs: random text embeddings, nothing downloaded (CLIP is needed only for set_classes)
    for model in (WorldModel("yolov8n-worldv2.yaml", nc=3, verbose=False),
                  YOLOEModel("yoloe-11n.yaml", nc=3, verbose=False)):
        with pytest.raises(YolocamError, match="open-vocabulary models .* not supported: .*(WorldDetect|YOLOEDetect)"):
            ModelAdapter(model)


@pytest.mark.parametrize("cfg", ["rtdetr-l.yaml", "yolov8n-rtdetr.yaml"])
def test_rtdetr_is_refused_in_one_line(cfg):
    with pytest.raises(YolocamError, match="^RT-DETR models are not supported: .*RTDETRDecoder"):
        Explainer(cfg, imgsz=64)


def test_the_cli_refuses_a_world_model_in_one_line(tmp_path, capsys):
    cv2.imwrite(str(tmp_path / "img.png"), np.full((64, 64, 3), 90, np.uint8))
    assert main(["explain", str(tmp_path / "img.png"), "--model", "yolov8s-world.yaml", "--out",
                 str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("yolocam: error: open-vocabulary models") and "guide" not in err[0]


# ------------------------------------------------ item 13: control characters reach the terminal escaped
def test_printable_escapes_controls_and_keeps_unicode():
    assert printable("a\x1b]0;pwn\x07b") == "a\\x1b]0;pwn\\x07b"
    assert printable("x\x1b[2J.png") == "x\\x1b[2J.png"
    assert printable("日本 ✓ 🐱 é") == "日本 ✓ 🐱 é"
    assert printable("a\nb\tc\x9b\u202e") == "a\\x0ab\\x09c\\x9b\\u202e"
    assert printable("a\nb", keep="\n") == "a\nb"
    assert printable(12) == "12"


def _no_raw(text: str) -> None:
    assert not any(c in text for c in RAW), repr(text)


def test_the_cli_prints_hostile_file_and_class_names_escaped(tmp_path, capfd):
    model = build_model("yolov8n.yaml", nc=2)
    model.names = {0: "a\x1b]0;pwn\x07", 1: "b\x1b[31m"}
    _save(model, tmp_path / "evil.pt")
    src = tmp_path / "src"
    src.mkdir()
    cv2.imwrite(str(src / "x\x1b[2J.png"), (np.random.RandomState(0).rand(64, 64, 3) * 255).astype(np.uint8))
    (src / "bad\x1b[2J.png").write_bytes(b"not an image")
    out = tmp_path / "out\x1b[2J"
    argv = ["explain", str(src), "--model", str(tmp_path / "evil.pt"), "--imgsz", "64", "--conf", "0.01",
            "--max-det", "2", "--out", str(out)]
    assert main(argv) == 0
    printed = "".join(capfd.readouterr())
    _no_raw(printed)
    assert "a\\x1b]0;pwn\\x07" in printed  # the model's classes note
    assert "skipped " in printed and "bad\\x1b[2J.png" in printed  # the unreadable image's warning
    assert "out\\x1b[2J" in printed  # the summary line's output folder
    manifest = json.loads((out / "manifest.json").read_text())  # files keep the real names
    assert [im["path"] for im in manifest["images"]] == [str(src / "x\x1b[2J.png")]
    assert {d["name"] for d in manifest["images"][0]["detections"]} <= {"a\x1b]0;pwn\x07", "b\x1b[31m"}
    assert manifest["errors"][0]["path"] == str(src / "bad\x1b[2J.png")

    # error lines: an unknown class, a missing source, an unknown option
    for argv, shown in ((argv[:-1] + [str(tmp_path / "o2"), "--classes", "zz\x1b[2J"], "zz\\x1b[2J"),
                        (["explain", str(tmp_path / "missing\x1b[2J.png")], "missing\\x1b[2J.png"),
                        (["explain", str(src), "--bogus\x07"], "--bogus\\x07")):
        assert main(argv) == 2
        printed = "".join(capfd.readouterr())
        _no_raw(printed)
        assert shown in printed and "error: " in printed


def test_logged_and_python_warnings_reach_the_terminal_escaped(capfd):
    import logging

    with warnings_to_stderr(), warnings.catch_warnings():
        warnings.simplefilter("always")
        logging.getLogger("yolocam").warning("image x\x1b[2J.png: odd")
        warnings.warn("Glyph 27 (\x1b) missing", UserWarning)
    err = capfd.readouterr().err
    _no_raw(err)
    assert "yolocam: warning: image x\\x1b[2J.png: odd" in err and "Glyph 27 (\\x1b) missing" in err
