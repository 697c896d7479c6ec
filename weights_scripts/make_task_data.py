"""Write the segmentation, pose and oriented-box datasets (``yolocam.demo.task_labels``) from one set of
generated scenes: images once under OUT/images, hard-linked into OUT/{segment,pose,obb}/images.

Usage: python weights_scripts/make_task_data.py OUT_DIR --train 3000 --val 200 --seed 0 [--jobs 2]
       [--splits train,val]
"""

import argparse
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from yolocam.demo import task_labels  # noqa: E402


def _chunk(args):
    out, split, seed, lo, hi = args
    task_labels.write_task_split(out, split, lo, hi, seed)
    return hi - lo


def write(out, counts: dict, seed: int, jobs: int) -> list:
    """Scenes per split (``counts``: split -> n) by ``jobs`` processes; returns the three data.yaml paths."""
    chunks = []
    for split, n in counts.items():
        step = max(1, -(-n // (jobs * 4)))
        chunks += [(out, split, seed, lo, min(n, lo + step)) for lo in range(0, n, step)]
    with ProcessPoolExecutor(jobs) as ex:
        sum(ex.map(_chunk, chunks))
    return [task_labels.write_task_yaml(Path(out) / t, t, tuple(counts)) for t in task_labels.TASKS]


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out")
    ap.add_argument("--train", type=int, default=3000)
    ap.add_argument("--val", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args()
    for path in write(a.out, {"train": a.train, "val": a.val}, a.seed, a.jobs):
        print(path)
