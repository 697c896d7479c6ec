"""Layers that some boxes do not depend on, and target callables that do not depend on the outputs.

On YOLOv8, layer 21 (`model.model[-2]`) feeds only the P5 level and layer 18 only P4 and P5: a P3
box's score never reaches them. Such a box is kept with a zero map and a reason, by every strategy.
"""

import json
import logging

import numpy as np
import pytest
import torch

import yolocam
from yolocam.errors import YolocamError

IMGSZ = 128
IOU = 0.1  # spreads the boxes over all three levels of this model (as in test_batching)
MAX_DET = 6
STRATEGIES = ({"strategy": "loop"}, {"strategy": "loop", "windows": False}, {"strategy": "batched"},
              {"strategy": "batched", "max_batch": 1})
INDEPENDENT = {"21": {0, 1}, "18": {0}, "15,21": set()}  # levels whose boxes do not reach the layers


def _explain(model, image, layers, **kw):
    exp = yolocam.Explainer(model, imgsz=IMGSZ, layers=layers, **kw)
    return exp.explain(image, conf=0.0, iou=IOU, max_det=MAX_DET)[0].detections


@pytest.mark.parametrize("target", ["class", "box", "cluster"])
@pytest.mark.parametrize("spec", ["21", "18", "-2", "15,21"])
def test_strategies_agree_and_independent_boxes_say_why(v8_model, image, spec, target):
    layers = [v8_model.model[-2]] if spec == "-2" else [int(i) for i in spec.split(",")]
    spec = "21" if spec == "-2" else spec
    runs = [_explain(v8_model, image, layers, target=target, **kw) for kw in STRATEGIES]
    first = runs[0]
    assert {d.level for d in first} == {0, 1, 2}
    for dets in runs[1:]:
        assert [(d.anchor, d.cls) for d in dets] == [(d.anchor, d.cls) for d in first]
        for a, b in zip(dets, first):
            assert (a.reason is None) == (b.reason is None)
            np.testing.assert_allclose(a.heatmap, b.heatmap, atol=2e-3)
    for d in first:
        independent = d.reason is not None
        if target != "cluster":  # a local target reads only its own level
            assert independent == (d.level in INDEPENDENT[spec])
        if independent:
            assert not d.heatmap.any() and "does not depend on the explained layers" in d.reason
            assert spec in d.reason
        else:
            assert d.heatmap.max() == 1.0
    if target == "cluster":  # the IoU-weighted sum also reads overlapping P5 predictions
        assert any(d.reason is None and d.level in INDEPENDENT[spec] for d in first) or not INDEPENDENT[spec]


def test_smoothgrad_and_multi_layer_fusions_agree_too(v8_model, image):
    for kw in ({"method": "smoothgradcam++"}, {"fuse": "aligned", "layers": [18, 21]}, {"fuse": "max", "layers": [18, 21]},
               {"fuse": "origin", "layers": [18, 21]}, {"fuse": "gate", "layers": [18, 21]}):
        kw = {"layers": [18], **kw}
        loop, batched = (_explain(v8_model, image, strategy=s, **kw) for s in ("loop", "batched"))
        assert [d.reason for d in loop] == [d.reason for d in batched]
        assert [d.level == 0 for d in loop] == [d.reason is not None for d in loop]
        for a, b in zip(loop, batched):
            np.testing.assert_allclose(a.heatmap, b.heatmap, atol=2e-3)


def test_one_warning_line_per_call_and_the_manifest_carries_the_reason(v8_model, image, tmp_path, caplog):
    exp = yolocam.Explainer(v8_model, imgsz=IMGSZ, layers=[21])
    with caplog.at_level(logging.WARNING, logger="yolocam"):
        results = exp.explain([image, image[:, ::-1].copy()], conf=0.0, iou=IOU, max_det=MAX_DET)
    dets = [d for r in results for d in r.detections]
    n = sum(d.reason is not None for d in dets)
    assert 0 < n < len(dets)
    lines = [r.getMessage() for r in caplog.records if r.name == "yolocam"]
    assert lines == [f"{n} of {len(dets)} detections do not depend on the explained layers (21); their heatmaps "
                     "are zero and their `reason` says why"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="yolocam"):
        exp2 = yolocam.Explainer(v8_model, imgsz=IMGSZ)
        exp2.explain(image, conf=0.0, iou=IOU, max_det=MAX_DET)
    assert not [r for r in caplog.records if r.name == "yolocam"]

    results[0].save(tmp_path / "out")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    entries = manifest["images"][0]["detections"]
    assert [e.get("reason") for e in entries] == [d.reason for d in results[0].detections]
    assert all("reason" not in e for e, d in zip(entries, results[0].detections) if d.reason is None)
    loaded = yolocam.load_output(tmp_path / "out")[0].detections
    assert [d.reason for d in loaded] == [d.reason for d in results[0].detections]


def test_folder_run_with_such_layers_succeeds(v8_model, image, tmp_path):
    import cv2

    from yolocam.cli.main import main

    folder = tmp_path / "images"
    folder.mkdir()
    for k in range(2):
        cv2.imwrite(str(folder / f"im{k}.png"), np.ascontiguousarray(image if k == 0 else image[::-1]))
    ckpt = tmp_path / "v8.pt"
    torch.save({"model": v8_model}, ckpt)
    code = main(["explain", str(folder), "--model", str(ckpt), "--layers", "21", "--imgsz", str(IMGSZ),
                 "--conf", "0.0", "--iou", str(IOU), "--max-det", str(MAX_DET), "--out", str(tmp_path / "out")])
    assert code == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    reasons = [d.get("reason") for img in manifest["images"] for d in img["detections"]]
    assert len(manifest["images"]) == 2 and any(reasons) and not all(reasons) and not manifest["errors"]


def _constant(outputs, det):
    return torch.tensor(1.0)


def _detached(outputs, det):
    return outputs.logits[0, det.anchor, det.cls].detach()


def _new_leaf(outputs, det):
    return torch.tensor(1.0, requires_grad=True)


def _p3_only(outputs, det):
    """A target that reads the first P3 prediction whatever the box (zero gradient w.r.t. layer 21)."""
    return outputs.logits[0, 0, det.cls]


@pytest.mark.parametrize("strategy", ["loop", "batched"])
def test_target_callables_that_do_not_depend_on_the_outputs_raise(v8_model, image, strategy):
    for fn in (_constant, _detached, _new_leaf):
        with pytest.raises(YolocamError, match=f"target callable '{fn.__name__}' returned a tensor that does not "
                                               "depend on the model's outputs"):
            _explain(v8_model, image, "neck", target=fn, strategy=strategy)
    dets = _explain(v8_model, image, [21], target=_p3_only, strategy=strategy)
    assert dets and all(d.reason is not None and not d.heatmap.any() for d in dets)
