"""Every method against a plain reimplementation written here, on a real YOLO model.

The reference owes nothing to the code under test: ultralytics' own letterbox makes the input,
ultralytics' own selection picks the detections (its `non_max_suppression` with the kept indices,
or the end-to-end head's own top-k), its forward gives the raw class scores, then one
`autograd.grad` per detection through the whole graph and the CAM formulas written out again
below. The engine instead preprocesses, selects and replays only part of the network, batched.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from ultralytics.data.augment import LetterBox
from ultralytics.utils.nms import non_max_suppression

import yolocam
from yolocam.cam.engine import CamEngine
from yolocam.model.layers import resolve_layers
from yolocam.cam.methods import get_method
from yolocam.model.targets import get_target

from conftest import family_model


def ref_cam(name, A, G):
    """(1, C, h, w) activations and gradients -> (h, w) raw map."""
    relu = torch.relu
    gc_w = G.mean(dim=(2, 3), keepdim=True)
    total = A.sum(dim=(2, 3), keepdim=True)
    den = 2 * G**2 + total * G**3
    alpha = torch.where(den == 0, torch.zeros_like(G), G**2 / torch.where(den == 0, torch.ones_like(den), den))
    pp_w = (alpha * relu(G)).sum(dim=(2, 3), keepdim=True)
    sens = G.abs() / G.abs().amax(dim=(2, 3), keepdim=True).clamp(min=1e-38)

    def svd_map(M):
        X = M[0].flatten(1).T  # (hw, C)
        X = X - X.mean(0)
        v = torch.linalg.svd(X, full_matrices=False).Vh[0]
        p = X @ v
        ref = M[0].mean(0).flatten() - M[0].mean()
        return (p if (p * ref).sum() >= 0 else -p).view(M.shape[-2:])

    maps = {
        "gradcam": lambda: (gc_w * A).sum(1)[0],
        "gradcam++": lambda: (pp_w * A).sum(1)[0],
        "xgradcam": lambda: (((G * A).sum(dim=(2, 3), keepdim=True) / (total + 1e-7)) * A).sum(1)[0],
        "layercam": lambda: (relu(G) * A).sum(1)[0],
        "hirescam": lambda: (G * A).sum(1)[0],
        "ssgradcam": lambda: (gc_w * sens * A).sum(1)[0],
        "ssgradcam++": lambda: (pp_w * sens * A).sum(1)[0],
        "eigencam": lambda: svd_map(A),
        "eigengradcam": lambda: svd_map(A * G),
    }
    return maps[name]()


def ultralytics_input(model, image, imgsz):
    """ultralytics' predictor preprocessing: its LetterBox (minimal padding to the stride), BGR to RGB, 0..1."""
    padded = LetterBox((imgsz, imgsz), auto=True, stride=int(model.stride.max()))(image=image)
    return torch.from_numpy(np.ascontiguousarray(padded[..., ::-1].transpose(2, 0, 1))).float()[None] / 255


def ultralytics_detections(model, x, end2end, conf, iou, max_det):
    """[(anchor, cls)] that ultralytics itself keeps: NMS with the kept prediction indices, or the end-to-end
    head's own top-k over its one-to-one scores."""
    with torch.no_grad():
        y, raw = model.eval()(x)
    if not end2end:
        out, keep = non_max_suppression(y, conf, iou, max_det=max_det, return_idxs=True)
        return list(zip(keep[0].tolist(), out[0][:, 5].int().tolist()))
    head = model.model[-1]
    scores, labels, index = head.get_topk_index(raw["one2one"]["scores"].sigmoid().permute(0, 2, 1), head.max_det)
    kept = scores[0, :, 0] > conf
    return list(zip(index[0][kept].tolist(), labels[0, :, 0][kept].int().tolist()))[:max_det]


def reference_maps(model, x, layer_ids, dets, name, end2end):
    """Per (anchor, cls): sum over layers of the upsampled rectified map, divided by its max."""
    model = model.eval()
    store = {}
    handles = [model.model[i].register_forward_hook(lambda m, i_, o, k=i: store.__setitem__(k, o)) for i in layer_ids]
    try:
        with torch.enable_grad():
            _, raw = model(x)
            scores = (raw["one2one"] if end2end else raw.get("one2many", raw))["scores"]  # (1, nc, A)
            out = []
            for anchor, cls in dets:
                acts = [store[i] for i in layer_ids]
                grads = torch.autograd.grad(scores[0, cls, anchor], acts, retain_graph=True)
                total = 0
                for a, g in zip(acts, grads):
                    m = torch.relu(ref_cam(name, a.detach(), g))
                    total = total + F.interpolate(m[None, None], size=x.shape[-2:], mode="bilinear",
                                                  align_corners=False)[0, 0]
                peak = total.max()
                out.append(total / peak if peak > 0 else total)
    finally:
        for h in handles:
            h.remove()
    return torch.stack(out)


@pytest.mark.parametrize("family,layers", [("v8", [15, 18, 21]), ("v8", [12, 15, 18, 21]), ("26", [16, 19, 22])])
@pytest.mark.parametrize("name", ["gradcam", "gradcam++", "xgradcam", "layercam", "hirescam", "ssgradcam",
                                  "ssgradcam++", "eigencam", "eigengradcam"])
@pytest.mark.parametrize("strategy", ["batched", "loop"])
def test_engine_matches_plain_reimplementation(family, layers, name, strategy, image):
    model = family_model(family)
    exp = yolocam.Explainer(model, imgsz=128, method="gradcam")
    x, _ = exp.adapter.preprocess([image], 128)
    engine = CamEngine(exp.adapter, get_method(name), get_target("class"), resolve_layers(exp.adapter, layers),
                       fuse="sum", max_batch=3, strategy=strategy)  # several chunks
    result = engine.run(x, conf=0.3, max_det=5)
    x_ref = ultralytics_input(model, image, 128)
    torch.testing.assert_close(x, x_ref, atol=1 / 255, rtol=0)  # measured: equal
    ref_dets = ultralytics_detections(model, x_ref, exp.adapter.end2end, conf=0.3, iou=0.7, max_det=5)
    assert len(ref_dets) == 5
    # the same raw predictions (integers: exact), in ultralytics' order
    assert [(d.anchor, d.cls) for d in result.detections[0]] == ref_dets
    ref = reference_maps(model, x_ref, layers, ref_dets, name, exp.adapter.end2end)
    torch.testing.assert_close(result.heatmaps[0], ref, atol=2e-3, rtol=1e-3)
