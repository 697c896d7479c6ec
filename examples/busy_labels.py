"""Class colours and labels on a busy photo: 60 boxes of 60 of the 80 COCO classes on ultralytics' bus.jpg.

    python examples/busy_labels.py [--out examples/images/busy_labels.jpg] [--boxes 60]

The boxes are random (seed 0) and drawn as every yolocam picture draws boxes (`draw_labelled_boxes`: class
colours, labels placed clear of each other, left out when no clear spot is left, leader lines to boxes whose
label had to move); beneath, the 80 class colours with their names. Shows whether an 80-class model's
colours can be told apart and its labels read.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="examples/images/busy_labels.jpg")
    ap.add_argument("--boxes", type=int, default=60)
    args = ap.parse_args()

    import ultralytics
    from ultralytics.utils import YAML

    from yolocam.output.labels import class_colour, conf_text, draw_labelled_boxes

    root = Path(ultralytics.__file__).parent
    names = YAML.load(root / "cfg" / "datasets" / "coco.yaml")["names"]
    image = cv2.imread(str(root / "assets" / "bus.jpg"))
    h, w = image.shape[:2]
    rng = np.random.default_rng(0)
    boxes, texts, colours = [], [], []
    for k in range(args.boxes):
        cls = (k * 4 + k // 20) % 80
        x, y = rng.uniform(0, w - 120), rng.uniform(0, h - 120)
        boxes.append([x, y, min(x + rng.uniform(40, 220), w - 1), min(y + rng.uniform(40, 260), h - 1)])
        texts.append(f"{names[cls]} {conf_text(rng.uniform(0.0001, 0.99))}")
        colours.append(class_colour(cls))
    order = np.argsort([-float(t.rsplit(" ", 1)[1]) for t in texts])  # most confident first, as detections come
    draw_labelled_boxes(image, [boxes[i] for i in order], [texts[i] for i in order], [colours[i] for i in order])
    cell_w, cell_h, cols = w // 4, 30, 4
    swatches = np.full((cell_h * 20, w, 3), 40, np.uint8)
    cells = [[(k % cols) * cell_w + 6, (k // cols) * cell_h + 4, (k % cols + 1) * cell_w - 6, (k // cols + 1) * cell_h - 4]
             for k in range(80)]
    draw_labelled_boxes(swatches, cells, [f"{k} {names[k]}" for k in range(80)], [class_colour(k) for k in range(80)],
                        size=14)
    picture = np.vstack([image, swatches])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(args.out, picture, [cv2.IMWRITE_JPEG_QUALITY, 88])
    print(f"wrote {args.out} ({picture.shape[1]}x{picture.shape[0]})")


if __name__ == "__main__":
    main()
