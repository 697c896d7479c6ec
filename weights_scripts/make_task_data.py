"""Write the segmentation, pose and oriented-box datasets (``yolocam.demo.task_labels``) from one set of
generated scenes: images once under OUT/images, hard-linked into OUT/{segment,pose,obb}/images; and
(``--tasks classify``) the classification crops of the same scenes under OUT/classify/{train,val}/<class>.

Usage: python weights_scripts/make_task_data.py OUT_DIR --train 3000 --val 200 --seed 0 [--jobs 2]
       [--tasks segment,pose,obb,classify]
"""

import argparse
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import make_data  # noqa: E402  (this folder's scene writer)
from yolocam.demo import task_labels  # noqa: E402


def _chunk(args):
    out, split, seed, lo, hi, tasks = args
    detection_tasks = tuple(t for t in tasks if t in task_labels.TASKS)
    if detection_tasks:
        task_labels.write_task_split(out, split, lo, hi, seed, detection_tasks)
    if "classify" in tasks:
        task_labels.write_classify_split(Path(out) / "classify", split, lo, hi, seed)
    return hi - lo


def write(out, counts: dict, seed: int, jobs: int, tasks=task_labels.TASKS + ("classify",)) -> list:
    """Scenes per split (``counts``: split -> n) by ``jobs`` processes; returns each task's data path
    (a data.yaml; the classification folder for classify)."""
    chunks = [(out, split, seed, lo, hi, tuple(tasks)) for split, lo, hi in make_data.scene_ranges(counts, jobs)]
    with ProcessPoolExecutor(jobs) as ex:
        sum(ex.map(_chunk, chunks))
    paths = [task_labels.write_task_yaml(Path(out) / t, t, tuple(counts)) for t in task_labels.TASKS if t in tasks]
    return paths + ([Path(out).resolve() / "classify"] if "classify" in tasks else [])


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out")
    ap.add_argument("--train", type=int, default=3000)
    ap.add_argument("--val", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--tasks", default="segment,pose,obb,classify")
    a = ap.parse_args()
    for path in write(a.out, {"train": a.train, "val": a.val}, a.seed, a.jobs, a.tasks.split(",")):
        print(path)
