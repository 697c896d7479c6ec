"""How closely the CPU default's fast paths follow the exact computation, box by box.

    python examples/fast_path_agreement.py [--scenes 16] [--model demo-v8] [--imgsz 640] [--boxes 40]

On generated scenes (1280 x 1280, `yolocam bench --image scene`'s kind), every box NMS keeps at conf 0 (up
to `--boxes`) is explained three ways: the default (truncated windows, `gate` at the finest grid, batch norm
folded), `exact=True` (the exact replay, batch norm folded) and `exact=True` with the folding switched off
(the computation before either). Prints, per pair, the per-box Pearson correlation of the maps (median,
10th percentile, worst) and the share of boxes whose peak stays within 8 px.
"""

import argparse
import contextlib

import numpy as np

import yolocam
from yolocam.demo.scenes import make_scene


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    if a.std() == 0 or b.std() == 0:
        return float(np.array_equal(a, b))
    return float(np.corrcoef(a, b)[0, 1])


def peak_kept(a: np.ndarray, b: np.ndarray, px: float = 8.0) -> bool:
    pa, pb = np.unravel_index(a.argmax(), a.shape), np.unravel_index(b.argmax(), b.shape)
    return bool(np.hypot(pa[0] - pb[0], pa[1] - pb[1]) <= px)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=16)
    parser.add_argument("--model", default="demo-v8")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--boxes", type=int, default=40)
    args = parser.parse_args()
    default = yolocam.Explainer(args.model, imgsz=args.imgsz)
    exact = yolocam.Explainer(args.model, imgsz=args.imgsz, exact=True)
    unfolded = yolocam.Explainer(args.model, imgsz=args.imgsz, exact=True)
    unfolded.engine.folding.applied = lambda *a, **k: contextlib.nullcontext(0)
    pairs = {"default vs exact": [], "exact vs exact unfolded": [], "default vs exact unfolded": []}
    kept = {k: [] for k in pairs}
    for seed in range(args.scenes):
        image = make_scene(seed, size=(1280, 1280)).image
        maps = [[d.heatmap for d in e.explain(image, conf=0.0, max_det=args.boxes)[0].detections]
                for e in (default, exact, unfolded)]
        for name, (i, j) in zip(pairs, [(0, 1), (1, 2), (0, 2)]):
            for a, b in zip(maps[i], maps[j]):
                pairs[name].append(correlation(a, b))
                kept[name].append(peak_kept(a, b))
    print(f"{args.scenes} scenes, {len(pairs['default vs exact'])} boxes, imgsz {args.imgsz}")
    print("| pair | r median | r p10 | r worst | peak within 8 px |")
    print("|---|---|---|---|---|")
    for name, r in pairs.items():
        r = np.array(r)
        print(f"| {name} | {np.median(r):.4f} | {np.percentile(r, 10):.4f} | {r.min():.4f} | {np.mean(kept[name]):.3f} |")


if __name__ == "__main__":
    main()
