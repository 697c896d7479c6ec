"""D-RISE (black-box): seeds, one set of masked passes for all boxes, localisation, exported backends."""

import json
import math
import shutil
import warnings

import numpy as np
import pytest
import torch

import yolocam
from yolocam.cam.catalog import describe
from yolocam.cam.drise import DriseConfig, DriseEngine, MaskSource, drise_saliency, mask_weights
from yolocam.cam.methods import get_method
from yolocam.defaults import DEFAULT_METHOD
from yolocam.demo.models import model_source
from yolocam.demo.scenes import make_scene
from yolocam.errors import YolocamError
from yolocam.evaluation.metrics import pointing_game

IMGSZ = 160


def corr(a, b) -> float:
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


@pytest.fixture(scope="module")
def scene():
    return make_scene(1000, size=(320, 320))


def drise(model="demo-v8", **kw):
    kw = {"masks": 32, "mask_batch": 16, **kw}
    return yolocam.Explainer(model, method="drise", imgsz=IMGSZ, **kw)


def maps(result):
    return np.stack([d.heatmap for d in result.detections])


# ------------------------------------------------------------------ the core, on a synthetic detector
def box_detector(box=(40, 40, 80, 80)):
    """A fake detector: one prediction at `box`, its score the unmasked share of the box (grey = masked)."""
    x1, y1, x2, y2 = box

    def predict(batch):
        region = batch[:, :, y1:y2, x1:x2]
        score = (region - 114 / 255).abs().mean((1, 2, 3)) / (1 - 114 / 255)
        boxes = torch.tensor(box, dtype=torch.float32).expand(batch.shape[0], 1, 4)
        probs = torch.stack((score, 0.1 * score), -1)[:, None]  # (b, 1, 2)
        return boxes, probs

    return predict


def test_synthetic_map_points_at_the_box_and_seeds_converge():
    image = torch.ones(3, 128, 128)
    target, probs = torch.tensor([[40.0, 40, 80, 80]]), torch.tensor([[1.0, 0.1]])
    small = [drise_saliency(box_detector(), image, target, probs, DriseConfig(masks=16, seed=s, cell=16)) for s in (0, 1)]
    big = [drise_saliency(box_detector(), image, target, probs, DriseConfig(masks=512, seed=s, cell=16)) for s in (0, 1)]
    assert big[0].shape == (1, 128, 128) and float(big[0].max()) == pytest.approx(1.0)
    inside = big[0][0, 40:80, 40:80].mean()
    assert inside > 0.5 and inside > 3 * big[0][0, :30, :30].mean()
    assert corr(big[0], big[1]) > 0.9 and corr(big[0], big[1]) > corr(small[0], small[1])


def test_masks_seeded_locally_and_independent_of_batch():
    state = torch.get_rng_state()
    a = MaskSource((50, 70), DriseConfig(masks=10, seed=5, keep=0.3), "cpu")
    b = MaskSource((50, 70), DriseConfig(masks=10, seed=5, keep=0.3), "cpu")
    assert torch.equal(torch.get_rng_state(), state)  # torch's global random state untouched
    whole = a.masks(0, 10)
    assert whole.shape == (10, 50, 70) and 0 <= float(whole.min()) and float(whole.max()) <= 1
    assert torch.equal(whole, torch.cat([b.masks(0, 3), b.masks(3, 10)]))
    assert 0.2 < float(whole.mean()) < 0.4  # keep probability 0.3
    assert not torch.equal(whole, MaskSource((50, 70), DriseConfig(masks=10, seed=6, keep=0.3), "cpu").masks(0, 10))


def test_weights_iou_cosine_and_score():
    targets = torch.tensor([[0.0, 0, 10, 10], [20.0, 20, 30, 30]])
    tprobs = torch.tensor([[0.9, 0.0], [0.0, 0.8]])
    boxes = torch.tensor([[[0.0, 0, 10, 10], [20.0, 20, 30, 25]]])  # exact match; half of target 2
    probs = torch.tensor([[[0.5, 0.0], [0.0, 0.6]]])
    w = mask_weights(targets, tprobs, boxes, probs)
    assert w.shape == (1, 2)
    assert w[0, 0] == pytest.approx(0.5)  # IoU 1 x cos 1 x score 0.5
    assert w[0, 1] == pytest.approx(0.5 * 0.6)  # IoU 0.5 x cos 1 x score 0.6


@pytest.mark.parametrize("field,value", [("masks", 0), ("keep", 1.0), ("cell", 1), ("batch", -2), ("seed", 0.5)])
def test_bad_parameters_one_line(field, value):
    with pytest.raises(YolocamError, match=f"drise {field}: expected"):
        DriseConfig(**{field: value}).check()


# ------------------------------------------------------------------ the demo detector (PyTorch)
def test_same_seed_same_maps_other_seed_other_maps(scene):
    a, b = drise(seed=3).explain(scene.image)[0], drise(seed=3, mask_batch=32).explain(scene.image)[0]
    c = drise(seed=4).explain(scene.image)[0]
    assert len(a.detections) >= 2
    np.testing.assert_allclose(maps(a), maps(b), atol=1e-4)  # other mask batches: measured 7e-7
    assert not np.allclose(maps(a), maps(c), atol=1e-3)
    for d in a.detections:
        assert d.heatmap.shape == scene.image.shape[:2] and d.heatmap.max() == pytest.approx(1.0, abs=1e-3)


def test_all_boxes_from_one_set_of_masked_passes(scene, monkeypatch):
    calls = []
    original = DriseEngine.predict
    monkeypatch.setattr(DriseEngine, "predict", lambda self, x: calls.append(len(x)) or original(self, x))
    result = drise(masks=40, mask_batch=16).explain(scene.image)[0]
    assert len(result.detections) >= 2
    assert calls == [16, 16, 8]  # ceil(40 / 16) passes for all boxes, not per box


def test_map_points_at_its_box(scene):
    result = drise(masks=192, mask_batch=64, seed=1).explain(scene.image)[0]
    hits = [pointing_game(d.heatmap, d.box) for d in result.detections if d.conf > 0.5]
    assert len(hits) >= 2 and np.mean(hits) >= 0.66


def test_model_left_as_found_and_catalog():
    from ultralytics import YOLO

    wrapper = YOLO(str(model_source("demo-v8")))
    module = wrapper.model.train()
    flags = [p.requires_grad for p in module.parameters()]
    exp = yolocam.Explainer(wrapper, method="drise", imgsz=96, masks=4, mask_batch=4)
    exp.explain(make_scene(3, size=(96, 96)).image)
    assert module.training and [p.requires_grad for p in module.parameters()] == flags
    assert all(p.grad is None for p in module.parameters())
    assert "drise" in yolocam.list_methods() and describe("drise")[0].endswith("black-box")
    assert exp.meta["method"] == "drise" and get_method("drise").black_box
    with pytest.raises(YolocamError, match="black-box"):
        from yolocam.cam.engine import CamEngine

        CamEngine(exp.adapter, get_method("drise"), exp.target, [])


# ------------------------------------------------------------------ exported backends (ONNX)
@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from ultralytics import YOLO

    folder = tmp_path_factory.mktemp("onnx")
    pt = folder / "demo-v8.pt"
    shutil.copy(model_source("demo-v8"), pt)
    with warnings.catch_warnings():  # torch's notice about its legacy ONNX exporter, which ultralytics uses
        warnings.simplefilter("ignore", DeprecationWarning)
        path = YOLO(str(pt)).export(format="onnx", imgsz=IMGSZ, dynamic=True, simplify=False, verbose=False)
    return str(path)


@pytest.fixture(scope="module")
def torchscript_model(tmp_path_factory):
    from ultralytics import YOLO

    folder = tmp_path_factory.mktemp("torchscript")
    pt = folder / "demo-v8.pt"
    shutil.copy(model_source("demo-v8"), pt)
    with warnings.catch_warnings():  # tracing and torch.jit deprecation notices from the export
        warnings.simplefilter("ignore")
        return str(YOLO(str(pt)).export(format="torchscript", imgsz=IMGSZ, verbose=False))


@pytest.mark.parametrize("backend", ["onnx_model", "torchscript_model"])
def test_exported_maps_equal_pytorch_maps(scene, backend, request):
    exported = request.getfixturevalue(backend)  # a static TorchScript export: the scene is square, same letterbox
    torch_result = drise(seed=2).explain(scene.image)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation notice
        onnx_result = drise(exported, seed=2).explain(scene.image)[0]
    assert [d.cls for d in onnx_result.detections] == [d.cls for d in torch_result.detections]
    # measured (ONNX Runtime and TorchScript against PyTorch): boxes 1.5e-5 px, confidences 6e-7, maps 1.6e-6
    # apart; the three confidences are 0.71 to 0.95, far from each other and from conf, so ranks match
    np.testing.assert_allclose([d.box for d in onnx_result.detections], [d.box for d in torch_result.detections],
                               atol=1e-2)
    assert all(d.anchor == e.anchor and d.level == e.level for d, e in zip(onnx_result.detections, torch_result.detections))
    np.testing.assert_allclose(maps(onnx_result), maps(torch_result), atol=1e-3)


@pytest.mark.parametrize("method", ["hirescam", "gradcam", "eigencam"])
def test_gradient_method_on_exported_model_refused(onnx_model, method):
    with pytest.raises(YolocamError, match="use method='drise'") as info:
        yolocam.Explainer(onnx_model, method=method)
    assert "\n" not in str(info.value) and "ONNX" in str(info.value)


def test_exported_model_refusals_and_missing_runtime(onnx_model, torchscript_model, monkeypatch):
    from ultralytics import YOLO

    with pytest.raises(YolocamError, match="TorchScript.*use method='drise'"):
        yolocam.Explainer(torchscript_model)
    with pytest.raises(YolocamError, match="use method='drise'"):
        yolocam.Explainer(YOLO(onnx_model, task="detect"))  # the wrapper of an exported model, too
    import yolocam.model.backend as backend

    monkeypatch.setattr(backend.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(YolocamError, match=r"needs the onnxruntime package: pip install 'yolocam\[onnx\]'"):
        yolocam.Explainer(onnx_model, method="drise")


def test_cli_explain_onnx_with_drise(scene, onnx_model, tmp_path, capsys):
    import cv2

    from yolocam.cli import main

    image = tmp_path / "scene.png"
    cv2.imwrite(str(image), scene.image)
    out = tmp_path / "out"
    argv = ["explain", str(image), "--model", onnx_model, "--imgsz", str(IMGSZ), "--out", str(out)]
    assert main(argv + ["--method", "drise", "--masks", "16", "--mask-batch", "8"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["method"] == "drise" and len(manifest["images"][0]["detections"]) >= 2
    assert len(np.load(out / "scene" / "heatmaps.npz")["heatmaps"]) == len(manifest["images"][0]["detections"])
    assert main(argv + ["--exist-ok"]) == 2
    assert "drise" in capsys.readouterr().err.splitlines()[-1]
    assert math.isfinite(manifest["images"][0]["detections"][0]["conf"])


def test_bench_drise_all_boxes_against_per_box_loop(capsys):
    from yolocam.cli import main

    assert main(["bench", "--method", "drise", "--imgsz", "96", "--masks", "8", "--mask-batches", "4,8",
                 "--repeats", "1", "--image", "scene"]) == 0
    out = capsys.readouterr().out
    assert "masks/s" in out and "per-box D-RISE loop" in out and f"gradient method {DEFAULT_METHOD}" in out


def test_default_mask_batch_and_end_to_end_head():
    exp = yolocam.Explainer("demo-26", method="drise", imgsz=96, masks=8)
    assert exp.drise.cfg.batch == 8  # CPU default (measured: larger batches are slower on a CPU)
    result = exp.explain(make_scene(2, size=(96, 96)).image)[0]
    assert all(d.heatmap.shape == (96, 96) and np.isfinite(d.heatmap).all() for d in result.detections)
    with pytest.raises(YolocamError, match="drise batch"):
        yolocam.Explainer("demo-v8", method="drise", mask_batch=0)


def test_drise_takes_no_target():
    """D-RISE scores each masked detection as a whole: a target other than `class` is refused in one line."""
    with pytest.raises(YolocamError, match="takes no target; got target='box'"):
        yolocam.Explainer("demo-v8", method="drise", target="box")
