"""`yolocam bench --method drise`: D-RISE for all boxes of an image against the alternatives.

For one generated scene (or the noise image) at `imgsz` it times, per image (median of `repeats`):

  all      D-RISE for every box of the image from one set of `masks` masked passes (`Explainer.explain`);
  per-box  the same maps computed one box at a time: `masks` masked passes per box;
  grad     the default gradient method (`Explainer.explain`, every box);

and reports masks per second, and the peak memory above the start (CUDA allocator, or sampled CPU
RSS) of the all-boxes run for each `--mask-batch` given: batching bounds it.
"""

from __future__ import annotations

import statistics
import sys
from typing import Sequence

import torch

from ..cam.drise import drise_saliency
from ..defaults import DEFAULT_METHOD
from ..errors import YolocamError
from ..explain.explainer import Explainer
from .bench import _timed, bench_image
from .terminal import printable


def run_drise_bench(model=None, imgsz: int = 352, device=None, masks: int = 256, batches: Sequence[int] = (8, 32),
                    repeats: int = 3, image: str = "scene", seed: int = 0, per_box: bool = True) -> dict:
    """One row per mask batch size, and the per-box and gradient timings (see the module docstring)."""
    exps = {b: Explainer(model, method="drise", imgsz=imgsz, device=device, masks=masks, mask_batch=b, seed=seed)
            for b in batches}  # first: they check imgsz and the masks' memory
    img = bench_image(imgsz, seed=seed, kind=image)
    first = exps[batches[0]]
    dev = torch.device(first.adapter.device)
    found = len(first.explain(img)[0].detections)  # also the warm-up
    rows = []
    for b, exp in exps.items():
        runs = [_timed(lambda: exp.explain(img), dev) for _ in range(repeats)]
        seconds = statistics.median(r[0] for r in runs)
        rows.append({"batch": b, "seconds": seconds, "masks_per_s": masks / seconds, "peak_mb": max(r[1] for r in runs)})
    out = {"model": first.adapter.name, "imgsz": first.imgsz, "device": str(dev), "threads": torch.get_num_threads(),
           "masks": masks, "boxes": found, "rows": rows}
    if per_box and found:
        out["per_box_s"] = statistics.median(_timed(lambda: _per_box(first, img), dev)[0] for _ in range(max(1, repeats // 2)))
    if not hasattr(first.adapter, "backend"):
        grad = Explainer(model, method=DEFAULT_METHOD, imgsz=imgsz, device=device)
        grad.explain(img)
        out["grad_method"] = grad.method.name
        out["grad_s"] = statistics.median(_timed(lambda: grad.explain(img), dev)[0] for _ in range(repeats))
    return out


def _per_box(exp: Explainer, img) -> list[torch.Tensor]:
    """D-RISE one box at a time (the loop that the shared masked passes replace)."""
    engine = exp.drise
    x, _ = exp.adapter.preprocess([img], exp.imgsz)
    dets, probs = engine.detect(x)
    with torch.no_grad():
        return [drise_saliency(engine.predict, x[0].float(), torch.tensor([d.box], device=x.device),
                               probs[0, [d.anchor]], engine.cfg) for d in dets[0]]


def format_drise(res: dict) -> str:
    lines = [f"model {res['model']}  imgsz {res['imgsz']}  device {res['device']}  torch threads {res['threads']}  "
             f"masks {res['masks']}  boxes {res['boxes']}"]
    lines.append(f"{'mask batch':>10}  {'all boxes s':>11}  {'masks/s':>8}  {'peak MiB':>8}")
    for r in res["rows"]:
        lines.append(f"{r['batch']:>10}  {r['seconds']:>11.2f}  {r['masks_per_s']:>8.1f}  {r['peak_mb']:>8.0f}")
    best = min(r["seconds"] for r in res["rows"])
    if "per_box_s" in res:
        lines.append(f"per-box D-RISE loop ({res['boxes']} x {res['masks']} masked passes): {res['per_box_s']:.2f} s "
                     f"({res['per_box_s'] / best:.1f}x the all-boxes run)")
    if "grad_s" in res:
        lines.append(f"gradient method {res['grad_method']} (all boxes): {res['grad_s']:.3f} s "
                     f"(D-RISE all boxes: {best / res['grad_s']:.0f}x that)")
    lines.append("  memory: peak above the start of the call (CUDA allocator, or sampled process RSS on CPU)")
    return "\n".join(lines)


def main_drise_bench(args) -> int:
    try:
        batches = sorted(set(getattr(args, "mask_batches", None) or [8, 32]))
        res = run_drise_bench(model=args.model, imgsz=args.imgsz or 352, device=args.device, masks=args.masks,
                              batches=batches, repeats=args.repeats, image=getattr(args, "image", "scene"))
    except YolocamError as exc:
        print(f"yolocam bench: {printable(exc)}", file=sys.stderr)
        return 2
    print(format_drise(res))
    return 0

