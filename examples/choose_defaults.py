"""Measure (method, layers, fuse) combinations on generated scenes: how the defaults were chosen.

    python examples/choose_defaults.py [--scenes 8] [--model demo-v8] [--out runs/yolocam/defaults]

Prints one Markdown table (the one in the README) and writes it as JSON. Columns: PG pointing
game, EiB energy in box, EoO energy on other objects (true positives vs their ground truth),
deletion / insertion AUC, and the Spearman correlation of each map with the map after the
layers from the head down to the earliest explained one are re-initialised (lower = the map
depends more on what the model learned).
"""

import argparse
import json
from pathlib import Path

from yolocam.evaluation.compare import compare_methods

GRID = [
    ("fine+backbone", "gate"), ("fine+neck", "gate"), ("fine", "sum"),
    ("neck", "sum"), ("neck", "max"), ("neck", "origin"), ("neck", "aligned"),
    ("head", "sum"), ("backbone", "sum"),
]
METHODS = ["gradcam", "gradcam++", "xgradcam", "layercam", "hirescam", "ssgradcam", "ssgradcam++"]
KEYS = ["pointing", "energy", "energy_other", "deletion_auc", "insertion_auc", "randomisation", "randomisation_box"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=8)
    parser.add_argument("--model", default=None)
    parser.add_argument("--out", default="runs/yolocam/defaults")
    parser.add_argument("--grid", default=None, help="comma list of layers:fuse, e.g. neck:sum,head:sum")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: the model's)")
    args = parser.parse_args()
    grid = [tuple(g.split(":")) for g in args.grid.split(",")] if args.grid else GRID
    methods = args.methods.split(",")
    rows = []
    print("| layers | fuse | method | PG | EiB | EoO | Del-AUC | Ins-AUC | Rand-rho | Rand-rho (box) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for layers, fuse in grid:
        for r in compare_methods(args.model, scenes=args.scenes, layers=layers, fuse=fuse, methods=methods,
                                 device=args.device):
            r.update(layers=layers, fuse=fuse)
            rows.append(r)
            cells = " | ".join(f"{r[k]:.3f}" for k in KEYS)
            print(f"| {layers} | {fuse} | {r['method']} | {cells} |", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "defaults.json").write_text(json.dumps(rows, indent=1))
    print("saved", out / "defaults.json")


if __name__ == "__main__":
    main()
