"""Evidence benchmark: does each method's map point at the mark that decides the class?

    python examples/evidence_benchmark.py --model yolocam/demo/weights/demo-marks.pt --scenes 100 [--imgsz N]
        [--grid neck:sum,neck:max,...] [--methods hirescam,...] [--seed 2026] [--out runs/yolocam/evidence]

On `--scenes` held-out evidence scenes (`yolocam.demo.evidence`, 'test'-split seeds of `--seed`, never
used in training) the detector runs once per (method, layers, fuse); every combination explains the
same detections. Scored on the true positives (IoU >= 0.5 with a ground-truth tile of the same class;
`--class-agnostic` drops the class condition, automatic when the model's classes are not dot/ring/plus):

- EvPG: `evidence_pointing`, the map's peak lies in the mark disc dilated to 1.5x its diameter;
- EvShare: `evidence_share`, the box's energy on that disc; xGauss: EvShare / the Gaussian baseline's;
- PG / EiB: the pointing game and energy in box against the tile (localisation, for reference).

Baselines on the same detections: a box-centred Gaussian (sigma = box size / 4) and a uniform box;
and ultralytics' own `predict(visualize=True)` heatmap (one LayerCAM map per image, the max over its
strongest predictions), scored per box with its peak taken inside the box (the map itself does not
say which of its peaks belongs to which box).

Goal for the default explanation on `demo-marks`: EvPG >= 0.8 and EvShare >= 2x the Gaussian's,
while keeping localisation on the shape scenes (`examples/choose_defaults.py`). Without a trained
marks detector the script still runs on any detector (e.g. `--model demo-v8 --scenes 2`, a smoke test
whose numbers say nothing about evidence: that detector never learned the marks).
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

import yolocam
from yolocam.defaults import DEFAULT_FUSE, DEFAULT_LAYERS, DEFAULT_METHOD
from yolocam.demo.evidence import EVIDENCE_CLASSES, make_evidence_scene
from yolocam.demo.scenes import scene_seed
from yolocam.errors import YolocamError
from yolocam.evaluation import metrics as M
from yolocam.explain.explainer import resolve_model

GRID = [("fine+backbone", "gate"), ("fine+neck", "gate"), ("fine", "sum")] + [
    (layers, fuse) for layers in ("neck", "head", "backbone") for fuse in ("sum", "max", "origin", "aligned")]
COLUMNS = ("tp", "evidence_pointing", "evidence_share", "x_gauss", "pointing", "energy", "seconds")


def parse_grid_item(item: str) -> tuple:
    """'neck:sum' -> ('neck', 'sum'); '2+15:max' -> ([2, 15], 'max') (layer indices joined by '+')."""
    layers, fuse = item.split(":")
    if all(p.isdigit() for p in layers.split("+")):
        return [int(p) for p in layers.split("+")], fuse
    return layers, fuse


def true_positives(dets, scene, agnostic: bool) -> list[tuple[int, int]]:
    """(detection index, ground-truth index) for the detections matched to a tile (greedy, by confidence)."""
    if not dets:
        return []
    boxes = [d.box for d in dets]
    classes = [0 if agnostic else d.cls for d in dets]
    gt_classes = np.zeros(len(scene.classes), np.int64) if agnostic else scene.classes
    matched = M.match_ground_truth(boxes, classes, scene.boxes, gt_classes)
    return [(k, int(g)) for k, g in enumerate(matched.tolist()) if g >= 0]


def score(heat, box, evidence, peak_in_box: bool = False) -> dict:
    """The four per-detection scores of one map (H, W) for one box and its mark disc (cx, cy, d)."""
    h = M.as_heatmap(heat)
    inside = M.box_masks(tuple(h.shape), box)[0]
    ptg = h * inside if peak_in_box else h
    return {"evidence_pointing": M.evidence_pointing(ptg, evidence), "evidence_share": M.evidence_share(h, evidence, box),
            "pointing": float(M.pointing_game(h, box)), "energy": M.energy_in_box(h, box)}


class _CaptureCams:
    """Stands in for `cv2` inside ultralytics' plotting module: keeps the raw per-image CAM that
    `predict(visualize=True)` colour-maps (instead of parsing its JPEG overlay) and writes no files."""

    def __init__(self, cv2):
        self.cv2, self.maps = cv2, []

    def __getattr__(self, name):
        return getattr(self.cv2, name)

    def applyColorMap(self, src, colormap):  # noqa: N802 (cv2's name)
        self.maps.append(np.array(src, copy=True))
        return self.cv2.applyColorMap(src, colormap)

    def imwrite(self, *args, **kwargs):
        return True


def ultralytics_cam(yolo, image: np.ndarray, imgsz: int, conf: float) -> np.ndarray | None:
    """ultralytics' own `predict(visualize=True)` heatmap for `image`, in the image's pixels (float, [0, 1])."""
    import cv2
    from ultralytics.utils import plotting

    cap = _CaptureCams(plotting.cv2)
    plotting.cv2 = cap
    try:
        with tempfile.TemporaryDirectory() as tmp:
            yolo.predict(image, imgsz=imgsz, conf=conf, visualize=True, verbose=False, save=False, project=tmp,
                         name="vis")
    finally:
        plotting.cv2 = cap.cv2
    if not cap.maps:
        return None
    cam = cap.maps[-1].astype(np.float32) / 255.0  # (H', W') on the letterboxed input
    h, w = image.shape[:2]
    hh, ww = cam.shape
    r = min(hh / h, ww / w)
    nw, nh = round(w * r), round(h * r)
    left, top = round((ww - nw) / 2 - 0.1), round((hh - nh) / 2 - 0.1)
    return cv2.resize(cam[top:top + nh, left:left + nw], (w, h), interpolation=cv2.INTER_LINEAR)


def mean_row(name: dict, rows: list[dict], seconds: float, gauss_share: float | None) -> dict:
    out = dict(name, tp=len(rows), seconds=round(seconds, 2))
    for k in ("evidence_pointing", "evidence_share", "pointing", "energy"):
        out[k] = float(np.mean([r[k] for r in rows])) if rows else float("nan")
    out["x_gauss"] = out["evidence_share"] / gauss_share if gauss_share else float("nan")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="weights path or demo name (default: the bundled default)")
    ap.add_argument("--scenes", type=int, default=50)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--imgsz", type=int, default=None, help="default: the model's training size")
    ap.add_argument("--conf", type=float, default=0.25)
    ap.add_argument("--device", default=None)
    ap.add_argument("--grid", default=None, help="comma list of layers:fuse (default: neck/head/backbone x all fusions)")
    ap.add_argument("--methods", default=None, help="comma list (default: every method)")
    ap.add_argument("--class-agnostic", action="store_true", help="match detections to tiles regardless of class")
    ap.add_argument("--no-ultralytics", action="store_true", help="skip ultralytics' predict(visualize=True) map")
    ap.add_argument("--out", default="runs/yolocam/evidence")
    a = ap.parse_args()

    yolo, model, train_imgsz = resolve_model(a.model)
    imgsz = a.imgsz or train_imgsz
    grid = [parse_grid_item(g) for g in a.grid.split(",")] if a.grid else GRID
    methods = a.methods.split(",") if a.methods else [m for m in yolocam.list_methods() if m != "odam"]
    scenes = [make_evidence_scene(scene_seed(a.seed, "test", i)) for i in range(a.scenes)]

    # reference detections: those of the default explanation (every combination explains the same ones)
    ref = yolocam.Explainer(model, method=DEFAULT_METHOD, layers=DEFAULT_LAYERS, fuse=DEFAULT_FUSE, imgsz=imgsz,
                            device=a.device)
    names = [ref.names.get(i) for i in range(len(ref.names))]
    agnostic = a.class_agnostic or names != list(EVIDENCE_CLASSES)
    if agnostic and not a.class_agnostic:
        print(f"note: model classes {names} are not {list(EVIDENCE_CLASSES)}: matching tiles class-agnostically "
              "(a smoke test; the scores say nothing about evidence)")
    refs = []  # per scene: [(anchor, box, (cx, cy, d))] of the true positives
    for scene, res in zip(scenes, ref.explain([s.image for s in scenes], conf=a.conf)):
        tps = true_positives(res.detections, scene, agnostic)
        refs.append([(res.detections[k].anchor, np.asarray(res.detections[k].box, np.float32),
                      (*scene.mark_centres[g].tolist(), float(scene.mark_diameters[g]))) for k, g in tps])
    n_tp = sum(len(r) for r in refs)
    print(f"{a.scenes} scenes (seed {a.seed}), imgsz {imgsz}, conf {a.conf}: {n_tp} true positives "
          f"of {sum(len(s.boxes) for s in scenes)} tiles")

    rows = []
    shape = scenes[0].image.shape[:2] if scenes else (640, 640)
    for name, fn in (("gaussian", lambda b: M.gaussian_box_map(shape, b)), ("uniform", lambda b: M.uniform_box_map(shape, b))):
        t0 = time.perf_counter()
        per = [score(fn(b), b, ev) for r in refs for _, b, ev in r]
        rows.append(mean_row({"layers": "-", "fuse": "-", "method": f"baseline:{name}"}, per, time.perf_counter() - t0,
                             None))
    gauss = rows[0]["evidence_share"]
    for r in rows:
        r["x_gauss"] = r["evidence_share"] / gauss if gauss else float("nan")
        print_row(r)
    if not a.no_ultralytics and yolo is not None:
        t0, per = time.perf_counter(), []
        for scene, r in zip(scenes, refs):
            cam = ultralytics_cam(yolo, scene.image, imgsz, a.conf) if r else None
            per += [score(cam, b, ev, peak_in_box=True) for _, b, ev in r] if cam is not None else []
        rows.append(mean_row({"layers": "head-in", "fuse": "max", "method": "ultralytics:visualize"}, per,
                             time.perf_counter() - t0, gauss))
        print_row(rows[-1])

    black_box_done = False
    for layers, fuse in grid:
        for method in methods:
            if method == "drise":  # no layers: one run, whatever the grid
                if black_box_done:
                    continue
                black_box_done = True
            t0 = time.perf_counter()
            try:
                exp = yolocam.Explainer(model, method=method, layers=layers, fuse=fuse, imgsz=imgsz, device=a.device)
                results = exp.explain([s.image for s in scenes], conf=a.conf)
            except YolocamError as e:
                print(f"skip {layers}:{fuse}:{method}: {e}")
                continue
            per = []
            for res, r in zip(results, refs):
                by_anchor = {d.anchor: d for d in res.detections}
                per += [score(by_anchor[anc].heatmap, b, ev) for anc, b, ev in r if anc in by_anchor]
            label = layers if isinstance(layers, str) else "+".join(map(str, layers))
            shown_fuse = fuse
            if method == "drise":
                label, shown_fuse = "-", "-"
            rows.append(mean_row({"layers": label, "fuse": shown_fuse, "method": method}, per, time.perf_counter() - t0,
                                 gauss))
            print_row(rows[-1])

    print()
    print("| layers | fuse | method | TP | EvPG | EvShare | xGauss | PG | EiB | s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print_row(r)
    default = [r for r in rows if (r["method"], r["layers"], r["fuse"]) == (DEFAULT_METHOD, DEFAULT_LAYERS, DEFAULT_FUSE)]
    if default:
        d = default[0]
        ok = d["evidence_pointing"] >= 0.8 and d["x_gauss"] >= 2.0
        print(f"default ({DEFAULT_METHOD}, {DEFAULT_LAYERS}, {DEFAULT_FUSE}): EvPG {d['evidence_pointing']:.3f} "
              f"(goal >= 0.8), EvShare {d['x_gauss']:.2f}x the Gaussian's (goal >= 2x): {'met' if ok else 'NOT met'}")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"model": str(a.model), "scenes": a.scenes, "seed": a.seed, "imgsz": imgsz, "conf": a.conf,
            "class_agnostic": agnostic, "true_positives": n_tp}
    (out / "evidence_benchmark.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print("saved", out / "evidence_benchmark.json")


def print_row(r: dict) -> None:
    cells = " | ".join(f"{r[k]:.3f}" if isinstance(r[k], float) else str(r[k]) for k in COLUMNS)
    print(f"| {r['layers']} | {r['fuse']} | {r['method']} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
