"""Evaluate a detector on a FRESH held-out procedural set (seed never used for training).

Usage: python weights_scripts/evaluate.py yolocam/demo/weights/demo-v8.pt --n 500 --seed 2026 --imgsz 352
Prints mAP50 and mAP50-95 (ultralytics val, CPU).
"""

import argparse
from pathlib import Path

import _offline  # noqa: F401  (must precede ultralytics imports)
import make_data
from ultralytics import YOLO

from yolocam.demo.scenes import CLASS_NAMES


def heldout(out: str, n: int, seed: int, jobs: int) -> Path:
    """Generate ``n`` 'test'-split scenes with ``seed`` once; return a data.yaml pointing val at them."""
    root = Path(out).resolve()
    imgs = root / "images" / "test"
    if not imgs.is_dir() or len(list(imgs.glob("*.jpg"))) != n:
        make_data.write(str(root), n, 0, seed, jobs, splits=("test",))
    y = root / "heldout.yaml"
    names = "\n".join(f"  {i}: {c}" for i, c in enumerate(CLASS_NAMES))
    y.write_text(f"path: {root}\ntrain: images/test\nval: images/test\nnames:\n{names}\n")
    return y


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("weights", nargs="+")
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--imgsz", type=int, default=352)
    ap.add_argument("--out", default="/tmp/yolocam_heldout_2026")
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args()
    data = heldout(a.out, a.n, a.seed, a.jobs)
    for w in a.weights:
        m = YOLO(w).val(data=str(data), imgsz=a.imgsz, batch=16, device="cpu", plots=False, workers=0,
                        split="val", project="/tmp/yolocam_eval", name=Path(w).stem, exist_ok=True, verbose=True)
        print(f"RESULT {w}: images={a.n} seed={a.seed} imgsz={a.imgsz} "
              f"mAP50={m.box.map50:.4f} mAP50-95={m.box.map:.4f}")
