"""Train a demo detector from scratch from a model YAML (CPU, no downloads).

Usage: python weights_scripts/train.py --model weights_scripts/demo-v8.yaml --data /tmp/yolocam_data/data.yaml \
           --epochs 30 --imgsz 352 --batch 16 --name demo-v8
Outputs go to --project (default /tmp/yolocam_runs)/NAME/weights/{last,best}.pt
"""

import argparse

import _offline  # noqa: F401  (must precede ultralytics imports)
from ultralytics import YOLO

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", required=True, help="model YAML (from scratch) or a .pt checkpoint (fine-tune stage)")
    ap.add_argument("--data", required=True)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--imgsz", type=int, default=352)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--project", default="/tmp/yolocam_runs")
    ap.add_argument("--name", required=True)
    ap.add_argument("--val", type=int, default=0, help="validate every epoch (1) or only at the end (0)")
    ap.add_argument("--close-mosaic", type=int, default=5)
    ap.add_argument("--lr0", type=float, default=0.002)
    ap.add_argument("--fraction", type=float, default=1.0)
    ap.add_argument("--mosaic", type=float, default=1.0)
    ap.add_argument("--warmup-epochs", type=float, default=1.0)
    ap.add_argument("--time", type=float, default=None, help="hours; overrides --epochs (schedule fitted to it)")
    ap.add_argument("--device", default="cpu", help="cpu, or a GPU index such as 0")
    ap.add_argument("--scale", type=float, default=0.4, help="scale augmentation (+/- gain)")
    ap.add_argument("--task", default="detect", help="detect, segment, pose, obb or classify")
    ap.add_argument("--erasing", type=float, default=0.4, help="classify: random erasing probability")
    ap.add_argument("--auto-augment", default="randaugment", help="classify: policy, or none")
    ap.add_argument("--flipud", type=float, default=0.5, help="vertical flips (0 for pose: its flip_idx is left-right)")
    a = ap.parse_args()

    model = YOLO(a.model, task=a.task)
    model.train(
        data=a.data, epochs=a.epochs, imgsz=a.imgsz, batch=a.batch, workers=a.workers, device=a.device,
        project=a.project, name=a.name, exist_ok=True, amp=False, plots=False,
        pretrained=a.model.endswith(".pt"),  # from scratch for YAMLs; a local .pt continues its own weights
        val=bool(a.val), cache="ram", optimizer="AdamW", lr0=a.lr0, cos_lr=False, warmup_epochs=a.warmup_epochs,
        close_mosaic=a.close_mosaic, fliplr=0.5, flipud=a.flipud, degrees=0.0, mosaic=a.mosaic, mixup=0.0,
        hsv_h=0.3, hsv_s=0.5, hsv_v=0.4, scale=a.scale, translate=0.1, seed=0, deterministic=False,
        fraction=a.fraction, verbose=True, nbs=a.batch, time=a.time, erasing=a.erasing,
        auto_augment=None if a.auto_augment == "none" else a.auto_augment,
    )
