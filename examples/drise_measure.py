"""D-RISE on the demo detectors: convergence (masks until two seeds agree) and a comparison with gradient methods.

    python examples/drise_measure.py [--model demo-v8] [--scenes 6] [--imgsz 352] [--masks 1000]

1. Convergence: each detection's map from seed 0 and seed 1, after n = 32, 64, ... masks (running sums
   of one run per seed, the same estimator as `Explainer(method="drise", masks=n)`); the mean and the
   10th percentile of their Pearson correlation over all detections, and the first n where the mean
   reaches 0.9.
2. Comparison (`yolocam.evaluation.compare.compare_methods`, test-split scenes): pointing game, energy in
   box, energy on other objects, deletion / insertion AUC, randomisation; plus the Pearson correlation of
   each gradient method's map with the D-RISE map of the same detection.
"""

import argparse
import time

import numpy as np
import torch

import yolocam
from yolocam.cam.drise import GREY, DriseConfig, MaskSource, mask_weights
from yolocam.cam.fusion import normalise_
from yolocam.demo.scenes import make_scene, scene_seed
from yolocam.evaluation.compare import compare_methods, format_comparison


def checkpoint_maps(exp, image, seed, counts):
    """{n: (K, H, W) maps after the first n masks} for one image and one seed, and the detections."""
    engine = exp.drise
    x, _ = exp.adapter.preprocess([image], exp.imgsz)
    dets, probs = engine.detect(x)
    dets = dets[0]
    if not dets:
        return {}, dets
    targets = torch.tensor([d.box for d in dets])
    tprobs = probs[0, [d.anchor for d in dets]]
    cfg = DriseConfig(masks=max(counts), seed=seed, batch=engine.cfg.batch)
    size = tuple(x.shape[-2:])
    source = MaskSource(size, cfg, x.device)
    acc = torch.zeros((len(dets), size[0] * size[1]))
    msum, wsum, out = torch.zeros(size[0] * size[1]), torch.zeros(len(dets)), {}
    with torch.no_grad():
        for start in range(0, max(counts), cfg.batch):
            stop = min(start + cfg.batch, max(counts))
            m = source.masks(start, stop)
            boxes, p = engine.predict(x[0][None] * m[:, None] + GREY * (1 - m[:, None]))
            w = mask_weights(targets, tprobs, boxes, p)
            acc.addmm_(w.t(), m.flatten(1))
            msum += m.flatten(1).sum(0)
            wsum += w.sum(0)
            if stop in counts:
                out[stop] = normalise_((acc - (wsum / stop)[:, None] * msum[None]).view(len(dets), *size) / stop)
    return out, dets


def pearson(a, b) -> float:
    a, b = np.ravel(a) - np.mean(a), np.ravel(b) - np.mean(b)
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo-v8")
    parser.add_argument("--scenes", type=int, default=6)
    parser.add_argument("--imgsz", type=int, default=352)
    parser.add_argument("--masks", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--methods", default="hirescam,gradcam")
    parser.add_argument("--skip", default="", help="comma list of parts to skip: convergence,compare")
    args = parser.parse_args()
    skip = set(args.skip.split(","))
    images = [make_scene(scene_seed(0, "test", i)).image for i in range(args.scenes)]
    exp = yolocam.Explainer(args.model, method="drise", imgsz=args.imgsz, masks=args.masks, mask_batch=args.batch)
    if "convergence" not in skip:
        counts = [n for n in (32, 64, 128, 256, 512, 1024, 2048, 4096) if n <= args.masks]
        corrs = {n: [] for n in counts}
        t0 = time.perf_counter()
        for image in images:
            a, dets = checkpoint_maps(exp, image, 0, counts)
            b, _ = checkpoint_maps(exp, image, 1, counts)
            for n in a:
                corrs[n] += [pearson(u, v) for u, v in zip(a[n].numpy(), b[n].numpy())]
        print(f"convergence: {len(corrs[counts[0]])} detections on {args.scenes} scenes, imgsz {exp.imgsz} "
              f"({time.perf_counter() - t0:.0f} s)")
        print("| masks | mean r(seed 0, seed 1) | 10th percentile |\n|---|---|---|")
        for n in counts:
            print(f"| {n} | {np.mean(corrs[n]):.3f} | {np.percentile(corrs[n], 10):.3f} |", flush=True)
        reached = [n for n in counts if np.mean(corrs[n]) >= 0.9]
        print(f"mean correlation >= 0.9 from {reached[0] if reached else f'more than {counts[-1]}'} masks")
    if "compare" not in skip:
        methods = args.methods.split(",")
        rows = compare_methods(args.model, scenes=args.scenes, imgsz=args.imgsz, methods=methods + ["drise"],
                               drise={"masks": args.masks, "batch": args.batch})
        print(format_comparison(rows))
        rs = {m: [] for m in methods}
        for image in images:
            ref = exp.explain(image)[0]
            for m in methods:
                other = yolocam.Explainer(args.model, method=m, imgsz=args.imgsz).explain(image)[0]
                rs[m] += [pearson(d.heatmap, e.heatmap) for d, e in zip(ref.detections, other.detections)]
        for m in methods:
            print(f"correlation of {m} maps with D-RISE maps (same detections): mean {np.mean(rs[m]):.3f}, "
                  f"median {np.median(rs[m]):.3f} ({len(rs[m])} detections)")


if __name__ == "__main__":
    main()
