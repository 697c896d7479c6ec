"""User mistakes give one `YolocamError` line (CLI: exit 2), never a raw exception; sizes are rounded as ultralytics does."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

import yolocam
from yolocam.cli import main
from yolocam.demo.scenes import make_scene
from yolocam.errors import YolocamError

IMGSZ = 96


def yolocam_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("yolocam") and r.levelno == logging.WARNING]


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "error" in lines[0] and "Traceback" not in err
    return lines[0]


# ------------------------------------------------------------------ imgsz not a multiple of the stride
@pytest.mark.parametrize("imgsz, rounded", [(33, 64), (100, 128), (600, 608), (1000, 1024), (10, 32), (640, 640)])
def test_imgsz_is_rounded_up_to_the_stride_with_one_warning(v8_model, imgsz, rounded, caplog):
    with caplog.at_level(logging.WARNING, logger="yolocam"):
        exp = yolocam.Explainer(v8_model, imgsz=imgsz)
    assert exp.imgsz == rounded
    msgs = [m for m in yolocam_warnings(caplog) if "imgsz" in m]
    if imgsz == rounded:
        assert not msgs
    else:
        assert len(msgs) == 1 and f"imgsz={imgsz}" in msgs[0] and str(rounded) in msgs[0] and "32" in msgs[0]


@pytest.mark.parametrize("imgsz", [33, 100])
def test_rounded_imgsz_gives_ultralytics_boxes(v8_model, image, imgsz, tmp_path):
    from ultralytics import YOLO

    path = tmp_path / "m.pt"
    torch.save({"model": v8_model, "train_args": {}}, path)
    yolo = YOLO(str(path))
    ours = yolocam.Explainer(yolo, imgsz=imgsz, method="gradcam").explain(image, conf=0.3, max_det=20)[0].detections
    pred = yolo.predict(image, imgsz=imgsz, conf=0.3, max_det=20, verbose=False)[0]
    assert len(ours) == len(pred.boxes) > 0
    np.testing.assert_allclose([d.box for d in ours], pred.boxes.xyxy.numpy(), atol=1e-2)


@pytest.mark.parametrize("imgsz", [0, -32, 64.5, "640", True, [640, 480]])
def test_bad_imgsz(v8_model, imgsz):
    with pytest.raises(YolocamError, match="imgsz"):
        yolocam.Explainer(v8_model, imgsz=imgsz)


def test_cli_and_bench_round_imgsz(image, tmp_path, capsys):
    import cv2

    from yolocam.cli.bench import run_bench

    cv2.imwrite(str(tmp_path / "a.png"), image)
    rc = main(["explain", str(tmp_path / "a.png"), "--imgsz", "100", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "imgsz=100" in err and "128" in err
    rows = run_bench(imgsz=100, boxes=[2], repeats=1, warmup=0, variants="ab")
    assert rows[0]["imgsz"] == 128 and rows[0]["found"] >= 1


# ------------------------------------------------------------------ models and datasets
def test_unknown_model_config(tmp_path, capsys):
    with pytest.raises(YolocamError, match="yolov99n.yaml"):
        yolocam.Explainer("yolov99n.yaml")
    img = tmp_path / "a.png"
    import cv2

    cv2.imwrite(str(img), make_scene(0, size=(64, 64)).image)
    rc = main(["explain", str(img), "--model", "yolov99n.yaml", "--out", str(tmp_path / "o")])
    assert rc == 2
    line = one_error_line(capsys.readouterr().err)
    assert "yolov99n.yaml" in line and "yolov8n.yaml" in line
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("text, says", [
    ("path: /nonexistent\nval: images\n", "train"),
    ("garbage: [\n", "YAML"),
    ("path: {root}\ntrain: images\nval: images\nnames: {{0: a}}\n", "images"),
    (None, "not found"),
])
def test_val_with_a_broken_dataset_yaml(tmp_path, capsys, text, says):
    data = tmp_path / "broken.yaml"
    if text is not None:
        data.write_text(text.format(root=tmp_path / "missing_root"))
    rc = main(["val", "--data", str(data), "--imgsz", "64", "--out", str(tmp_path / "o")])
    line = one_error_line(capsys.readouterr().err)
    assert rc == 2
    assert "broken.yaml" in line and says in line


# ------------------------------------------------------------------ devices
@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu(v8_model):
    for dev in ("cuda", "cuda:0", 0, "0"):
        with pytest.raises(YolocamError, match="CUDA is not available"):
            yolocam.Explainer(v8_model, device=dev)


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")
def test_mps_without_mps(v8_model):
    with pytest.raises(YolocamError, match="MPS is not available"):
        yolocam.Explainer(v8_model, device="mps")


@pytest.mark.parametrize("dev", ["nonsense", "tpu", "cuda:x", 1.5, "0,1", ""])
def test_unknown_device(v8_model, dev):
    with pytest.raises(YolocamError, match="device: expected cpu, cuda, cuda:N"):
        yolocam.Explainer(v8_model, device=dev)


def test_cpu_devices_are_accepted(v8_model):
    for dev in ("cpu", "CPU", torch.device("cpu")):
        assert yolocam.Explainer(v8_model, device=dev, imgsz=IMGSZ).adapter.device.type == "cpu"


# ------------------------------------------------------------------ explain() arguments
@pytest.fixture(scope="module")
def demo():
    return yolocam.Explainer("demo-v8", imgsz=320)


@pytest.fixture(scope="module")
def scene():
    return make_scene(0, size=(240, 320)).image


def test_classes_by_index_or_name(demo, scene):
    every = demo.explain(scene)[0].detections
    for cls in sorted({d.cls for d in every}):
        want = [d.box for d in every if d.cls == cls]
        name = demo.names[cls]
        for spec in (cls, [cls], (cls,), np.int64(cls), name, [name]):
            assert [d.box for d in demo.explain(scene, classes=spec)[0].detections] == want, spec
    assert demo.explain(scene, classes=[])[0].detections == []


@pytest.mark.parametrize("classes, says", [
    (["hexagon"], "unknown class 'hexagon'; this model's classes are 0=circle, 1=square"),
    ([7], "unknown class 7"),
    (-1, "unknown class -1"),
    (True, "got True"),
    (1.5, "got 1.5"),
    ([0, None], "got None"),
])
def test_bad_classes(demo, scene, classes, says):
    with pytest.raises(YolocamError, match="classes") as info:
        demo.explain(scene, classes=classes)
    assert says in str(info.value)


@pytest.mark.parametrize("kwargs, says", [
    (dict(max_det=2.7), "max_det: expected a positive integer, got 2.7"),
    (dict(max_det=0), "max_det: expected a positive integer, got 0"),
    (dict(max_det="10"), "max_det: expected a positive integer, got '10'"),
    (dict(batch=True), "batch: expected a positive integer, got True"),
    (dict(conf="0.5"), "conf: expected a number in [0, 1], got '0.5'"),
    (dict(conf=float("nan")), "conf: expected a number in [0, 1], got nan"),
    (dict(conf=1.5), "conf: expected a number in [0, 1], got 1.5"),
    (dict(iou=None), "iou: expected a number in [0, 1], got None"),
])
def test_bad_thresholds(demo, scene, kwargs, says):
    with pytest.raises(YolocamError) as info:
        demo.explain(scene, **kwargs)
    assert says in str(info.value)


def test_numpy_numbers_are_accepted(demo, scene):
    a = demo.explain(scene, conf=np.float32(0.4), iou=np.float64(0.7), max_det=np.int64(3))[0].detections
    b = demo.explain(scene, conf=0.4, iou=0.7, max_det=3)[0].detections
    assert [d.box for d in a] == [d.box for d in b]


# ------------------------------------------------------------------ layers
def test_layer_zero_says_what_is_wrong(v8_model):
    with pytest.raises(YolocamError, match=r"layer 0 .*input image.*1\.\.21") as info:
        yolocam.Explainer(v8_model, layers=[0])
    assert "NoneType" not in str(info.value)
    with pytest.raises(YolocamError, match="layer 0"):
        yolocam.Explainer(v8_model, layers=[v8_model.model[0].conv])
    with pytest.raises(YolocamError, match=r"out of range.*1\.\.21"):
        yolocam.Explainer(v8_model, layers=[22])
    assert yolocam.Explainer(v8_model, layers=[1], imgsz=IMGSZ).layers[0].name == "1"
