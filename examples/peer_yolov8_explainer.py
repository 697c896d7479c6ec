"""The README's peer row for YOLOv8-Explainer, measured as yolocam is: evidence, stability and time.

    pip install YOLOv8-Explainer          # in a separate environment: it pins grad-cam 1.4.8
    python examples/peer_yolov8_explainer.py [--model demo-marks] [--scenes 40] [--stability-model demo-v8]
        [--stability-scenes 16] [--method EigenGradCAM] [--layers 12,17,21] [--out runs/yolocam/peer]

YOLOv8-Explainer (`YOLOv8_Explainer.yolov8_heatmap`) draws one pytorch-grad-cam map per image for the sum
of the top-`ratio` raw predictions' best class scores (its defaults: EigenGradCAM on layers 12, 17, 21,
conf 0.2, ratio 0.02). Its own `process(path)` only returns the coloured overlay; this script calls the
same CAM object (`heatmap.method(tensor, [heatmap.target])`) on the image letterboxed by its own
`letterbox` at the size yolocam uses, and maps the grey map back to the image's pixels. YOLOv8-Explainer
0.0.5 imports `ultralytics.nn.tasks.attempt_load_weights` and `ultralytics.utils.ops.non_max_suppression`,
which ultralytics 8.4 no longer has (it fails at import): where they are missing, this script puts them
back before the import (`load_checkpoint`'s model, and `ultralytics.utils.nms.non_max_suppression`).

- Evidence (`--model`, held-out evidence scenes, as examples/evidence_benchmark.py scores ultralytics'
  per-image map): for each true positive of yolocam's default detections, EvPG / EvShare / xGauss / PG /
  EiB with the map's peak taken inside the box; yolocam's default on the same boxes beside it.
- Stability (`--stability-model`, shape scenes, `yolocam.evaluation.stability`), for the peer and for
  ultralytics' `predict(visualize=True)` map: median Pearson r inside
  each box grown by 25 % after a JPEG re-save at quality 90 and a shift of (2, 1) px; the boxes are the
  model's own (ultralytics predict), each box's map the per-image map.
- Time: one map on the bench's 640 scene (`yolocam bench --image scene`) over a plain predict, one
  torch thread, median of `--repeats`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def import_peer():
    """YOLOv8-Explainer's `yolov8_heatmap` (None if not installed), importable on ultralytics 8.4."""
    from ultralytics.nn import tasks
    from ultralytics.utils import nms, ops

    if not hasattr(ops, "non_max_suppression"):
        ops.non_max_suppression = nms.non_max_suppression
    if not hasattr(tasks, "attempt_load_weights"):
        tasks.attempt_load_weights = lambda weight, device=None, inplace=True, fuse=False: tasks.load_checkpoint(
            weight, device=device, inplace=inplace, fuse=fuse)[0]
    try:
        from YOLOv8_Explainer import yolov8_heatmap
    except ImportError:
        return None
    return yolov8_heatmap


def peer_heatmap(weights: str, method: str, layers: list[int]):
    """YOLOv8-Explainer's heatmap object for `weights` on the CPU (its loader calls `torch.load` without
    `weights_only`, which torch >= 2.6 refuses for ultralytics checkpoints: allowed here for that call)."""
    import torch

    yolov8_heatmap = import_peer()
    original = torch.load
    torch.load = lambda *a, **k: original(*a, **{**k, "weights_only": False})
    try:
        with contextlib.redirect_stdout(sys.stderr):
            return yolov8_heatmap(weight=weights, device=torch.device("cpu"), method=method, layer=layers,
                                  show_box=False)
    finally:
        torch.load = original


def peer_map(heatmap, image: np.ndarray, imgsz: int) -> np.ndarray | None:
    """The peer's map (H, W) float in [0, 1] of a BGR image, in the image's pixels; None when its target
    has nothing above its confidence (it then returns the int 0 and the backward fails)."""
    import cv2
    import torch
    from YOLOv8_Explainer.utils import letterbox

    h, w = image.shape[:2]
    boxed, ratio, (dw, dh) = letterbox(image, new_shape=(imgsz, imgsz))
    rgb = np.float32(cv2.cvtColor(boxed, cv2.COLOR_BGR2RGB)) / 255.0
    tensor = torch.from_numpy(rgb.transpose(2, 0, 1)).unsqueeze(0)
    try:
        cam = heatmap.method(tensor, [heatmap.target])[0]
    except AttributeError:
        return None
    top, left = int(round(dh - 0.1)), int(round(dw - 0.1))
    nh, nw = int(round(h * ratio[1])), int(round(w * ratio[0]))
    return cv2.resize(np.ascontiguousarray(cam[top:top + nh, left:left + nw]), (w, h), interpolation=cv2.INTER_LINEAR)


class ImageMapExplainer:
    """Stands in for an `Explainer` in `yolocam.evaluation.stability.stability`: ultralytics' boxes, each
    carrying the one map of the image that `image_map(image)` returns (None: no map)."""

    def __init__(self, yolo, image_map, imgsz: int, conf: float):
        self.yolo, self.image_map, self.imgsz, self.conf = yolo, image_map, imgsz, conf

    def explain(self, image, conf=None, iou=0.7):
        r = self.yolo.predict(image, imgsz=self.imgsz, conf=conf or self.conf, iou=iou, verbose=False)[0]
        cam = self.image_map(image)
        cam = np.zeros(image.shape[:2], np.float32) if cam is None else cam
        dets = [SimpleNamespace(box=b.tolist(), cls=int(c), conf=float(p), heatmap=cam)
                for b, c, p in zip(r.boxes.xyxy.cpu(), r.boxes.cls.cpu(), r.boxes.conf.cpu())]
        return [SimpleNamespace(detections=dets)]


def evidence(a) -> list[dict]:
    import yolocam
    from evidence_benchmark import mean_row, score, true_positives
    from yolocam.demo.evidence import make_evidence_scene
    from yolocam.demo.scenes import scene_seed
    from yolocam.evaluation import metrics as M
    from yolocam.explain.explainer import resolve_model

    yolo, model, train_imgsz = resolve_model(a.model)
    imgsz = a.imgsz or train_imgsz
    scenes = [make_evidence_scene(scene_seed(a.seed, "test", i)) for i in range(a.scenes)]
    exp = yolocam.Explainer(model, imgsz=imgsz)
    heatmap = peer_heatmap(yolo.ckpt_path, a.method, a.layers)
    ours, peer, gauss, t_peer = [], [], [], 0.0
    for scene, res in zip(scenes, exp.explain([s.image for s in scenes], conf=a.conf)):
        tps = true_positives(res.detections, scene, agnostic=False)
        if not tps:
            continue
        t0 = time.perf_counter()
        cam = peer_map(heatmap, scene.image, imgsz)
        t_peer += time.perf_counter() - t0
        for k, g in tps:
            box = np.asarray(res.detections[k].box, np.float32)
            ev = (*scene.mark_centres[g].tolist(), float(scene.mark_diameters[g]))
            ours.append(score(res.detections[k].heatmap, box, ev))
            gauss.append(score(M.gaussian_box_map(scene.image.shape[:2], box), box, ev))
            if cam is not None:
                peer.append(score(cam, box, ev, peak_in_box=True))
    share = float(np.mean([g["evidence_share"] for g in gauss]))
    print(f"evidence: {a.scenes} scenes of {a.model} at {imgsz}, {len(ours)} true positives "
          f"({len(peer)} with a peer map)")
    return [mean_row({"layers": "fine+backbone", "fuse": "gate", "method": "yolocam default"}, ours, 0.0, share),
            mean_row({"layers": "+".join(map(str, a.layers)), "fuse": "-", "method": f"YOLOv8-Explainer {a.method}"},
                     peer, t_peer, share)]


def stability(a) -> dict:
    from evidence_benchmark import ultralytics_cam
    from yolocam.demo.scenes import make_scene, scene_seed
    from yolocam.evaluation.stability import aggregate, stability as stability_records
    from yolocam.explain.explainer import resolve_model

    yolo, _, train_imgsz = resolve_model(a.stability_model)
    imgsz = a.imgsz or train_imgsz
    heatmap = peer_heatmap(yolo.ckpt_path, a.method, a.layers)
    explainers = {"YOLOv8-Explainer": ImageMapExplainer(yolo, lambda im: peer_map(heatmap, im, imgsz), imgsz, a.conf),
                  "ultralytics visualize": ImageMapExplainer(yolo, lambda im: ultralytics_cam(yolo, im, imgsz, a.conf),
                                                             imgsz, a.conf)}
    scenes = [make_scene(scene_seed(a.seed, "test", i)).image for i in range(a.stability_scenes)]
    out = {}
    for name, exp in explainers.items():
        records = [r for image in scenes for r in stability_records(exp, image, ("jpeg90", "shift2_1"), conf=a.conf)]
        out[name] = {r["perturbation"]: r for r in aggregate(records)}
        print(f"stability of {name}: {a.stability_scenes} scenes of {a.stability_model} at {imgsz}: " + ", ".join(
            f"{k} r median {v['r_median']:.2f} / p10 {v['r_p10']:.2f} / peak kept {v['peak_kept']:.2f}"
            for k, v in out[name].items()))
    return out


def timing(a) -> dict:
    import torch

    from yolocam.cli.bench import bench_image
    from yolocam.explain.explainer import resolve_model

    torch.set_num_threads(1)
    yolo, _, _ = resolve_model(a.stability_model)
    heatmap = peer_heatmap(yolo.ckpt_path, a.method, a.layers)
    image = bench_image(640, 0, "scene")
    runs = {"predict": lambda: yolo.predict(image, imgsz=640, conf=a.conf, verbose=False),
            "peer": lambda: peer_map(heatmap, image, 640)}
    out = {}
    for name, fn in runs.items():
        fn()
        times = []
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        out[name] = float(np.median(times))
    out["ratio"] = out["peer"] / out["predict"]
    print(f"time on the 640 bench scene, one thread: predict {out['predict']:.3f} s, YOLOv8-Explainer "
          f"{out['peer']:.3f} s ({out['ratio']:.1f}x), one map for all boxes")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="demo-marks", help="the evidence detector (demo name or weights)")
    ap.add_argument("--scenes", type=int, default=40)
    ap.add_argument("--stability-model", default="demo-v8")
    ap.add_argument("--stability-scenes", type=int, default=16)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--imgsz", type=int, default=None, help="default: each model's training size")
    ap.add_argument("--conf", type=float, default=0.25)
    ap.add_argument("--method", default="EigenGradCAM", help="YOLOv8-Explainer's method (its default)")
    ap.add_argument("--layers", default="12,17,21", help="YOLOv8-Explainer's layer indices (its default)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default="runs/yolocam/peer")
    a = ap.parse_args()
    a.layers = [int(v) for v in a.layers.split(",")]
    if import_peer() is None:
        sys.exit("YOLOv8-Explainer is not installed: pip install YOLOv8-Explainer (a separate environment)")
    result = {"evidence": evidence(a), "stability": stability(a), "time": timing(a), "args": vars(a)}
    print("| method | TP | EvPG | EvShare | xGauss | PG | EiB |")
    print("|---|---|---|---|---|---|---|")
    for r in result["evidence"]:
        print(f"| {r['method']} | {r['tp']} | " + " | ".join(f"{r[k]:.3f}" for k in
                                                          ("evidence_pointing", "evidence_share", "x_gauss",
                                                           "pointing", "energy")) + " |")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "peer_yolov8_explainer.json").write_text(json.dumps(result, indent=1, default=float))
    print("saved", out / "peer_yolov8_explainer.json")


if __name__ == "__main__":
    main()
