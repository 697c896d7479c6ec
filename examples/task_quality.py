"""Per-task explanation quality on held-out shape scenes: segmentation, oriented boxes, pose.

    python examples/task_quality.py --task segment [--model demo-seg] [--scenes 50] [--seed 2026]
    python examples/task_quality.py --task obb     [--model demo-obb]
    python examples/task_quality.py --task pose    [--model demo-pose]
    python examples/task_quality.py --task classify [--model demo-cls]

The task's demo model runs on `--scenes` held-out scenes ('test'-split seeds of `--seed`, never used in
training); its detections matched to a ground-truth shape (box IoU >= 0.5, same class) are scored
against that shape's own region, which the scene generator knows exactly (`yolocam.demo.task_labels`):

- segment: PG-region = the map's peak lies on the shape's visible pixels (its ground-truth mask),
  E-region = the map's share of energy there; for the `mask` and `class` targets;
- obb: the same against the shape's own rotated box; for the `class` and `box` targets;
- pose: for each keypoint target `keypoint:K`, PKR = the map's peak lies within 0.15 x the shape's
  size (the larger side of its box) of that keypoint, and the median peak distance in that unit;
  the `class` map's peak scored against the same keypoints says whether keypoint maps say more;
- classify: each scene's crops (`task_labels.classify_crops`, the shape in the middle named by the
  label); for the correctly classified crops, the top class's map: PG = its peak lies in the middle
  shape's box, E = its share of energy there (image-level maps; other shapes may share the crop).

Baselines on the same detections: a uniform box, a box-centred Gaussian (sigma = box size / 4; its
peak is the box centre), and ultralytics' own `predict(visualize=True)` map (one map per image; its
peak taken inside the box). The model's own accuracy on the matched shapes is printed too (mask IoU,
rotated-box IoU, keypoint error) so a weak map can be told from a weak model.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import yolocam  # noqa: E402
from evidence_benchmark import ultralytics_cam  # noqa: E402
from yolocam.defaults import DEFAULT_FUSE, DEFAULT_LAYERS, DEFAULT_METHOD  # noqa: E402
from yolocam.demo import task_labels as TL  # noqa: E402
from yolocam.demo.scenes import make_scene, scene_seed  # noqa: E402
from yolocam.evaluation import metrics as M  # noqa: E402
from yolocam.explain.explainer import resolve_model  # noqa: E402

TARGETS = {"segment": ("mask", "class"), "obb": ("class", "box"), "classify": ("class",),
           "pose": tuple(f"keypoint:{k}" for k in range(len(TL.KEYPOINT_NAMES))) + ("class",)}
DEMO = {"segment": "demo-seg", "obb": "demo-obb", "pose": "demo-pose", "classify": "demo-cls"}
RADIUS = 0.15  # keypoint hit radius, share of the shape's size


def matched(dets, scene) -> list[tuple[int, int]]:
    """(detection index, ground-truth index) of the true positives (greedy by confidence, IoU >= 0.5)."""
    if not dets:
        return []
    boxes = np.asarray([d.box for d in dets], np.float32)
    gt = M.match_ground_truth(boxes, [d.cls for d in dets], scene.boxes, scene.classes)
    return [(k, int(g)) for k, g in enumerate(gt.tolist()) if g >= 0]


def regions(task: str, scene) -> list[np.ndarray]:
    """Per ground-truth shape, the (H, W) bool region a map is scored against (segment, obb)."""
    if task == "segment":
        return list(TL.visible_masks(scene))
    return [M.rbox_mask(scene.image.shape[:2], f).numpy() for f in scene.frames]


def region_scores(heat, region) -> dict:
    return {"pg": M.pointing_in_mask(heat, region), "energy": M.energy_in_mask(heat, region)}


def keypoint_scores(heat, gt_kpts, size: float, box=None) -> dict:
    """Per keypoint: hit (peak within RADIUS * size) and distance / size. With `box`, the peak is taken inside it."""
    h = np.asarray(heat, np.float32)
    if box is not None:
        h = h * M.box_masks(h.shape, box)[0].numpy()
    out = {}
    for k, (x, y, _) in enumerate(gt_kpts):
        d = M.peak_distance(h, (x, y)) / size
        out[k] = {"hit": float(d <= RADIUS), "dist": d}
    return out


def model_accuracy(task: str, det, scene, g: int) -> float:
    """The model's own quality on one matched shape: mask IoU, rotated-box IoU, or mean keypoint error / size."""
    if task == "segment":
        a, b = det.mask, TL.visible_masks(scene)[g]
        return float((a & b).sum() / max((a | b).sum(), 1))
    if task == "obb":
        shape = scene.image.shape[:2]
        a, b = M.rbox_mask(shape, det.rbox).numpy(), M.rbox_mask(shape, scene.frames[g]).numpy()
        return float((a & b).sum() / max((a | b).sum(), 1))
    gt = TL.scene_keypoints(scene)[g]
    size = float(max(scene.boxes[g][2:] - scene.boxes[g][:2]))
    return float(np.mean(np.linalg.norm(np.asarray(det.keypoints)[:, :2] - gt[:, :2], axis=1)) / size)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", required=True, choices=tuple(TARGETS))
    ap.add_argument("--model", default=None, help="weights path or demo name (default: the task's demo model)")
    ap.add_argument("--scenes", type=int, default=50)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--imgsz", type=int, default=None)
    ap.add_argument("--conf", type=float, default=0.25)
    ap.add_argument("--method", default=DEFAULT_METHOD)
    ap.add_argument("--layers", default=DEFAULT_LAYERS)
    ap.add_argument("--fuse", default=DEFAULT_FUSE)
    ap.add_argument("--no-ultralytics", action="store_true")
    ap.add_argument("--out", default="runs/yolocam/task_quality")
    a = ap.parse_args()

    task = a.task
    if task == "classify":
        return classify_quality(a)
    yolo, model, train_imgsz = resolve_model(a.model or DEMO[task])
    imgsz = a.imgsz or train_imgsz
    scenes = [make_scene(scene_seed(a.seed, "test", i)) for i in range(a.scenes)]
    images = [s.image for s in scenes]
    kw = dict(method=a.method, layers=a.layers, fuse=a.fuse, imgsz=imgsz)
    ref = yolocam.Explainer(model, target=TARGETS[task][0], **kw)
    if ref.adapter.task != task:
        raise SystemExit(f"--model is a {ref.adapter.task} model, not {task}")
    runs = {TARGETS[task][0]: ref.explain(images, conf=a.conf)}
    tps = [matched(r.detections, s) for r, s in zip(runs[TARGETS[task][0]], scenes)]
    n_tp, n_gt = sum(map(len, tps)), sum(len(s.classes) for s in scenes)
    acc = [model_accuracy(task, r.detections[k], s, g) for r, s, t in zip(runs[TARGETS[task][0]], scenes, tps)
           for k, g in t]
    acc_name = {"segment": "mask IoU", "obb": "rotated-box IoU", "pose": "keypoint error / size"}[task]
    print(f"{task}: {a.scenes} scenes (seed {a.seed}), imgsz {imgsz}: {n_tp} true positives of {n_gt} shapes; "
          f"model {acc_name}: mean {np.mean(acc):.3f}, median {np.median(acc):.3f}")
    for target in TARGETS[task][1:]:
        t0 = time.perf_counter()
        runs[target] = yolocam.Explainer(model, target=target, **kw).explain(images, conf=a.conf)
        print(f"  {target}: {time.perf_counter() - t0:.1f} s")

    # per matched shape: (scene index, detection of the reference run, ground truth index)
    cases = [(i, runs[TARGETS[task][0]][i].detections[k], g) for i, t in enumerate(tps) for k, g in t]
    shape0 = lambda i: scenes[i].image.shape[:2]  # noqa: E731
    maps = {"baseline: uniform box": lambda i, d: M.uniform_box_map(shape0(i), d.box),
            "baseline: Gaussian": lambda i, d: M.gaussian_box_map(shape0(i), d.box)}
    for target, results in runs.items():
        by_anchor = [{d.anchor: d for d in r.detections} for r in results]
        maps[f"{target} ({a.method}, {a.layers}, {a.fuse})"] = (
            lambda i, d, b=by_anchor: b[i][d.anchor].heatmap if d.anchor in b[i] else None)
    if not a.no_ultralytics and yolo is not None:
        cams = {i: ultralytics_cam(yolo, images[i], imgsz, a.conf) for i in sorted({c[0] for c in cases})}
        maps["ultralytics visualize (peak in box)"] = lambda i, d: cams[i]

    rows = []
    gt_kpts = [TL.scene_keypoints(s) for s in scenes] if task == "pose" else None
    gt_regions = [regions(task, s) for s in scenes] if task != "pose" else None
    for name, get in maps.items():
        in_box = name.startswith("ultralytics")
        per = []
        for i, d, g in cases:
            heat = get(i, d)
            if heat is None:
                continue
            if task == "pose":
                size = float(max(scenes[i].boxes[g][2:] - scenes[i].boxes[g][:2]))
                per.append(keypoint_scores(heat, gt_kpts[i][g], size, d.box if in_box else None))
            else:
                h = np.asarray(heat, np.float32)
                if in_box:
                    h = h * M.box_masks(h.shape, d.box)[0].numpy()
                per.append(region_scores(h, gt_regions[i][g]))
        row = {"map": name, "n": len(per)}
        if task == "pose":
            for k, kname in enumerate(TL.KEYPOINT_NAMES):
                row[f"PKR {kname}"] = float(np.mean([p[k]["hit"] for p in per])) if per else float("nan")
            own = name.split(" ")[0]
            if own.startswith("keypoint:"):  # the keypoint target scored on its own keypoint
                k = int(own.split(":")[1])
                row["own PKR"] = row[f"PKR {TL.KEYPOINT_NAMES[k]}"]
                row["own dist"] = float(np.median([p[k]["dist"] for p in per])) if per else float("nan")
        else:
            row["PG-region"] = float(np.mean([p["pg"] for p in per])) if per else float("nan")
            row["E-region"] = float(np.mean([p["energy"] for p in per])) if per else float("nan")
        rows.append(row)
        print(" | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row.values()), flush=True)

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"task": task, "model": str(a.model or DEMO[task]), "scenes": a.scenes, "seed": a.seed, "imgsz": imgsz,
            "conf": a.conf, "true_positives": n_tp, "shapes": n_gt, "model_accuracy": {acc_name: float(np.mean(acc))}}
    (out / f"{task}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print("saved", out / f"{task}.json")


def classify_quality(a) -> None:
    """The classify rows: top-1 accuracy on the crops, then PG / E in the middle shape's box per map kind."""
    yolo, model, train_imgsz = resolve_model(a.model or DEMO["classify"])
    imgsz = a.imgsz or train_imgsz
    crops = []
    for i in range(a.scenes):
        seed = scene_seed(a.seed, "test", i)
        crops += TL.classify_crops(make_scene(seed), seed)
    exp = yolocam.Explainer(model, method=a.method, layers=a.layers, fuse=a.fuse, imgsz=imgsz)
    t0 = time.perf_counter()
    results = exp.explain([c[0] for c in crops], max_det=1)
    seconds = time.perf_counter() - t0
    names = [exp.names[i] for i in range(len(exp.names))]
    right = [k for k, (r, c) in enumerate(zip(results, crops)) if r.detections[0].name == TL.CLASS_NAMES[c[1]]]
    print(f"classify: {len(crops)} crops of {a.scenes} scenes (seed {a.seed}), imgsz {imgsz}, classes {names}: "
          f"top-1 accuracy {len(right) / len(crops):.3f}; explained in {seconds:.1f} s")
    shape = crops[0][0].shape[:2]
    maps = {"baseline: uniform image": lambda k: np.ones(shape, np.float32),
            "baseline: centred Gaussian": lambda k: M.gaussian_box_map(shape, [0, 0, shape[1], shape[0]]),
            f"class ({a.method}, {a.layers}, {a.fuse})": lambda k: results[k].detections[0].heatmap}
    if not a.no_ultralytics and yolo is not None:
        maps["ultralytics visualize"] = lambda k: ultralytics_cam(yolo, crops[k][0], imgsz, 0.0)
    rows = []
    for name, get in maps.items():
        per = [(get(k), crops[k][2]) for k in right]
        per = [(h, b) for h, b in per if h is not None]
        row = {"map": name, "n": len(per),
               "PG-box": float(np.mean([M.pointing_in_mask(h, M.box_masks(shape, b)[0]) for h, b in per])),
               "E-box": float(np.mean([M.energy_in_box(h, b) for h, b in per]))}
        rows.append(row)
        print(" | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row.values()), flush=True)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"task": "classify", "model": str(a.model or DEMO["classify"]), "scenes": a.scenes, "crops": len(crops),
            "seed": a.seed, "imgsz": imgsz, "top1": len(right) / len(crops)}
    (out / "classify.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print("saved", out / "classify.json")


if __name__ == "__main__":
    main()
