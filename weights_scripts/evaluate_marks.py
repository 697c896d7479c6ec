"""Evaluate a marks detector on FRESH held-out evidence scenes: mAP, and proof that it uses the marks.

Usage: python weights_scripts/evaluate_marks.py yolocam/demo/weights/demo-marks.pt --n 500 --seed 2026 \
           --imgsz 416 --ablate 100 [--device 0]

Prints
  RESULT <w>: ... mAP50=... mAP50-95=...         (ultralytics val on n 'test'-split scenes of --seed)
  ABLATION <w>: ... erase=... swap=...            (on the first --ablate of those scenes)
erase: share of the correctly detected objects (IoU >= 0.5, right class, conf >= --conf) whose detection
disappears (no box of any class at IoU >= 0.5) once their mark is erased (the tile stays);
swap: share of (object, other class) pairs whose detection takes the new class when the mark is
replaced by that class's mark (same centre, size and colour). The bar for demo-marks: mAP50 >= 0.95,
erase >= 0.90, swap >= 0.90.
"""

import argparse
from pathlib import Path

import _offline  # noqa: F401  (must precede ultralytics imports)
import make_marks_data
import numpy as np

from yolocam.demo.evidence import EVIDENCE_CLASSES, make_evidence_scene
from yolocam.demo.scenes import scene_seed

IOU = 0.5


def heldout(out: str, n: int, seed: int, jobs: int) -> Path:
    """Write ``n`` 'test'-split evidence scenes of ``seed`` once; return a data.yaml whose val is them."""
    root = Path(out).resolve()
    imgs = root / "images" / "test"
    if not imgs.is_dir() or len(list(imgs.glob("*.jpg"))) != n:
        make_marks_data.write(str(root), n, 0, seed, jobs, splits=("test",))
    y = root / "heldout.yaml"
    names = "\n".join(f"  {i}: {c}" for i, c in enumerate(EVIDENCE_CLASSES))
    y.write_text(f"path: {root}\ntrain: images/test\nval: images/test\nnames:\n{names}\n")
    return y


def _iou(box, boxes) -> np.ndarray:
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    lt, rb = np.maximum(b[:, :2], box[:2]), np.minimum(b[:, 2:], box[2:])
    inter = np.clip(rb - lt, 0, None).prod(1)
    area = lambda x: np.clip(x[..., 2:] - x[..., :2], 0, None).prod(-1)  # noqa: E731
    return inter / (area(b) + area(np.asarray(box, np.float64)) - inter + 1e-9)


def _best(pred, box):
    """(class, IoU) of the prediction of highest IoU with ``box``; (-1, 0) when there is none."""
    boxes, classes = pred
    if len(boxes) == 0:
        return -1, 0.0
    iou = _iou(box, boxes)
    k = int(iou.argmax())
    return int(classes[k]), float(iou[k])


def ablation(model, seeds, imgsz: int = 416, conf: float = 0.25, device=None, batch: int = 16) -> dict:
    """Erase / swap each correctly detected object's mark (one object per edited image) and re-detect.

    model: an ultralytics YOLO; seeds: scene seeds. Returns {"objects", "detected", "erase", "swap",
    "erase_n", "swap_n"} (rates over the detected objects; NaN when none was detected)."""
    def predict(images):
        out = []
        for i in range(0, len(images), batch):
            for r in model.predict(images[i:i + batch], imgsz=imgsz, conf=conf, device=device, verbose=False):
                out.append((r.boxes.xyxy.cpu().numpy(), r.boxes.cls.cpu().numpy().astype(int)))
        return out

    objects = detected = erased_ok = swapped_ok = swaps = 0
    for seed in seeds:
        scene = make_evidence_scene(seed)
        (orig,) = predict([scene.image])
        jobs, images = [], []
        for k, (box, cls) in enumerate(zip(scene.boxes, scene.classes.tolist())):
            objects += 1
            c, iou = _best(orig, box)
            if iou < IOU or c != cls:
                continue
            detected += 1
            jobs.append((k, None))
            images.append(make_evidence_scene(seed, edits={k: None}).image)
            for new in range(len(EVIDENCE_CLASSES)):
                if new != cls:
                    jobs.append((k, new))
                    images.append(make_evidence_scene(seed, edits={k: new}).image)
        for (k, new), pred in zip(jobs, predict(images)):
            c, iou = _best(pred, scene.boxes[k])
            if new is None:
                erased_ok += iou < IOU
            else:
                swaps += 1
                swapped_ok += iou >= IOU and c == new
    nan = float("nan")
    return {"objects": objects, "detected": detected, "erase_n": detected, "swap_n": swaps,
            "erase": erased_ok / detected if detected else nan, "swap": swapped_ok / swaps if swaps else nan}


if __name__ == "__main__":
    from ultralytics import YOLO

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("weights", nargs="+")
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--imgsz", type=int, default=416, help="demo-marks was trained at 416")
    ap.add_argument("--ablate", type=int, default=100, help="scenes for the erase/swap test (0: skip)")
    ap.add_argument("--conf", type=float, default=0.25)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default="/tmp/yolocam_marks_heldout_2026")
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args()
    data = heldout(a.out, a.n, a.seed, a.jobs)
    for w in a.weights:
        model = YOLO(w)
        m = model.val(data=str(data), imgsz=a.imgsz, batch=16, device=a.device, plots=False, workers=0,
                      split="val", project="/tmp/yolocam_eval", name=Path(w).stem, exist_ok=True, verbose=True)
        print(f"RESULT {w}: images={a.n} seed={a.seed} imgsz={a.imgsz} "
              f"mAP50={m.box.map50:.4f} mAP50-95={m.box.map:.4f}", flush=True)
        if a.ablate:
            r = ablation(model, [scene_seed(a.seed, "test", i) for i in range(a.ablate)], a.imgsz, a.conf, a.device)
            print(f"ABLATION {w}: scenes={a.ablate} seed={a.seed} imgsz={a.imgsz} conf={a.conf} "
                  f"objects={r['objects']} detected={r['detected']} erase={r['erase']:.4f} (n={r['erase_n']}) "
                  f"swap={r['swap']:.4f} (n={r['swap_n']})", flush=True)
