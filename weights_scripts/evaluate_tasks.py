"""Evaluate the task demo models on a FRESH held-out set (seed never used for training): ultralytics val.

Usage: python weights_scripts/evaluate_tasks.py --seg yolocam/demo/weights/demo-seg.pt --pose ... --obb ... --cls ...
           [--n 500] [--seed 2026] [--imgsz 352] [--cls-imgsz 128]
Prints box mAP50 / mAP50-95 and the task's own (mask, pose) mAP, or top-1 / top-5 accuracy (classify).
"""

import argparse
from pathlib import Path

import _offline  # noqa: F401  (must precede ultralytics imports)
import make_task_data
from ultralytics import YOLO



def heldout(out: str, n: int, seed: int, jobs: int, tasks) -> Path:
    """Write ``n`` 'test'-split scenes of ``seed`` once (all tasks) and a val YAML per task pointing at them."""
    root = Path(out).resolve()
    if not (root / "done").is_file():
        make_task_data.write(str(root), {"test": n}, seed, jobs, tasks)
        (root / "done").write_text(str(n))
    for task in ("segment", "pose", "obb"):
        text = (root / task / "data.yaml").read_text().replace("test: images/test", "val: images/test")
        (root / task / "heldout.yaml").write_text(text.replace("path:", "train: images/test\npath:", 1))
    train = root / "classify" / "train"  # ultralytics wants a train/ folder (its class names): the test set
    if not train.exists():
        train.symlink_to(root / "classify" / "test", target_is_directory=True)
    return root


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    for t in ("seg", "pose", "obb", "cls"):
        ap.add_argument(f"--{t}", default=None)
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--imgsz", type=int, default=352)
    ap.add_argument("--cls-imgsz", type=int, default=128)
    ap.add_argument("--out", default="/tmp/yolocam_heldout_tasks_2026")
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args()
    root = heldout(a.out, a.n, a.seed, a.jobs, ("segment", "pose", "obb", "classify"))
    common = dict(batch=16, device="cpu", plots=False, workers=0, project="/tmp/yolocam_eval", exist_ok=True)
    for flag, task in (("seg", "segment"), ("pose", "pose"), ("obb", "obb")):
        w = getattr(a, flag)
        if w:
            m = YOLO(w).val(data=str(root / task / "heldout.yaml"), imgsz=a.imgsz, split="val", name=Path(w).stem,
                            **common)
            own = {"segment": m.seg if task == "segment" else None, "pose": getattr(m, "pose", None)}.get(task)
            extra = f" {task}-mAP50={own.map50:.4f} {task}-mAP50-95={own.map:.4f}" if own is not None else ""
            print(f"RESULT {w}: task={task} images={a.n} seed={a.seed} imgsz={a.imgsz} "
                  f"box-mAP50={m.box.map50:.4f} box-mAP50-95={m.box.map:.4f}{extra}")
    if a.cls:
        m = YOLO(a.cls).val(data=str(root / "classify"), imgsz=a.cls_imgsz, split="test", name=Path(a.cls).stem,
                            **common)
        print(f"RESULT {a.cls}: task=classify scenes={a.n} seed={a.seed} imgsz={a.cls_imgsz} "
              f"top1={m.top1:.4f} top5={m.top5:.4f}")
