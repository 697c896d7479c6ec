"""The README's why-not figures: `yolocam val`'s missed ground truths, confusions and context reliance on
generated validation sets whose answers are known (examples/README.md, "Why not").

- demo-v8 on val's default 32 shape scenes (what `yolocam val --model demo-v8` prints);
- demo-marks on 32 held-out evidence scenes (640 x 640, at its own imgsz), and on 16 edited ones (320 x 320
  at imgsz 224, as tests/test_val_why_not.py; even: object 0's mark erased, so it is missed; odd: object 0
  given the next class's mark, so it is confused);
- demo-context on 24 held-out context scenes at imgsz 160 (a tile's class is set by a tag beside it), and how
  many of its true positives' maps peak on their tag (`explain`, the default method).

    python examples/why_not_figures.py [--scenes 32] [--edited 16] [--context 24]
"""

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

import yolocam
from yolocam.demo.evidence import make_evidence_scene, write_evidence_dataset
from yolocam.demo.scenes import scene_seed
from yolocam.demo.why_not_scenes import make_context_scene, write_context_dataset, write_edited_dataset
from yolocam.evaluation.evidence import evidence_pointing
from yolocam.evaluation.validation import validate

MARKS = "yolocam/demo/weights/demo-marks.pt"
CONTEXT = "yolocam/demo/weights/demo-context.pt"
SEED = 2026
EDITED_SIZE = (320, 320)


def summary(label: str, report) -> None:
    row = report.table[-1]  # "all"
    print(f"{label}: {report.counts['images']} images, {row['tp']} TP, {row['fp']} FP; missed {row['missed']} "
          f"(pointing {row['missed_pointing']:.2f}, energy in box {row['missed_energy']:.2f}); confused "
          f"{row['confused']} (pointing {row['confused_pointing']:.2f}, energy {row['confused_energy']:.2f}); "
          f"tp_outside {row['tp_outside']:.3f}")


def edited(n: int) -> tuple[list[int], list[dict]]:
    seeds = [scene_seed(SEED, "test", i) for i in range(n)]
    edits = [{0: None} if i % 2 == 0 else {0: (int(make_evidence_scene(s, size=EDITED_SIZE).classes[0]) + 1) % 3}
             for i, s in enumerate(seeds)]
    return seeds, edits


def tag_peaks(n: int) -> tuple[int, int]:
    """(true positives whose map peaks on their tag (disc grown 1.5x), true positives) over n context scenes."""
    exp = yolocam.Explainer(CONTEXT, imgsz=160)
    hits = total = 0
    for i in range(n):
        s = make_context_scene(scene_seed(SEED, "val", i))
        dets = exp.explain(s["image"])[0].detections
        for box, cls, centre, d in zip(s["boxes"], s["classes"], s["tag_centres"], s["tag_diameters"]):
            found = [x for x in dets if x.cls == int(cls) and _iou(x.box, box) >= 0.5]
            if found:
                total += 1
                hits += evidence_pointing(found[0].heatmap, (float(centre[0]), float(centre[1]), float(d))) >= 0.5
    return hits, total


def _iou(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    w, h = max(0.0, min(a[2], b[2]) - max(a[0], b[0])), max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return w * h / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=32, help="shape scenes (demo-v8) and evidence scenes (demo-marks)")
    ap.add_argument("--edited", type=int, default=16, help="edited evidence scenes (demo-marks)")
    ap.add_argument("--context", type=int, default=24, help="context scenes (demo-context)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    kw = dict(device="cpu", verbose=False, worst=0)
    with tempfile.TemporaryDirectory(prefix="yolocam_why_not_") as tmp:
        tmp = Path(tmp)
        summary("demo-v8, shape scenes", validate("demo-v8", scenes=a.scenes, **kw))
        data = write_evidence_dataset(tmp / "evidence", 0, a.scenes, seed=SEED)
        summary("demo-marks, evidence scenes", validate(MARKS, data=str(data), **kw))
        data = write_edited_dataset(tmp / "edited", *edited(a.edited), size=EDITED_SIZE)
        summary("demo-marks, edited scenes", validate(MARKS, data=str(data), imgsz=224, **kw))
        data = write_context_dataset(tmp / "context", 0, a.context, seed=SEED)
        summary("demo-context, context scenes", validate(CONTEXT, data=str(data), imgsz=160, **kw))
    hits, total = tag_peaks(a.context)
    print(f"demo-context: the map's peak on the tag for {hits} of {total} true positives")


if __name__ == "__main__":
    main()
