"""The README's evidence picture: one held-out evidence scene, explained by the default and by the
fast preset (hirescam, neck, sum), each box's crop with its heat; the mark decides each class.

    python examples/evidence_picture.py [--seed 10] [--out examples/images/evidence.jpg]
"""

import argparse

import cv2
import numpy as np

import yolocam
from yolocam.demo.evidence import make_evidence_scene
from yolocam.demo.scenes import scene_seed
from yolocam.output.labels import class_colour
from yolocam.output.render import box_crop

WEIGHTS = "yolocam/demo/weights/demo-marks.pt"
ROWS = [("default: aalayercam, fine+backbone, gate", {}),
        ("preset fast: hirescam, neck, sum", {"method": "hirescam", "layers": "neck", "fuse": "sum"})]


def crops(image: np.ndarray, result, size: int = 220) -> list[np.ndarray]:
    """Per detection a zoomed crop (`box_crop`) with its heat, its box and its class, `size` px square."""
    out = []
    for d in result.detections:
        crop = box_crop(image, d.heatmap, d.box, label=f"{d.name} {d.conf:.2f}", size=size, colour=class_colour(d.cls))
        tile = np.full((size, size, 3), 32, np.uint8)
        tile[:crop.shape[0], :crop.shape[1]] = crop
        out.append(tile)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=10)
    ap.add_argument("--boxes", type=int, default=5)
    ap.add_argument("--out", default="examples/images/evidence.jpg")
    a = ap.parse_args()
    scene = make_evidence_scene(scene_seed(2026, "test", a.seed))
    rows = []
    for title, kw in ROWS:
        result = yolocam.Explainer(WEIGHTS, **kw).explain(scene.image)[0]
        tiles = crops(scene.image, result)[:a.boxes]
        row = np.hstack(tiles)
        bar = np.full((28, row.shape[1], 3), 32, np.uint8)
        cv2.putText(bar, title, (6, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (235, 235, 235), 1, cv2.LINE_AA)
        rows.append(np.vstack([bar, row]))
    cv2.imwrite(a.out, np.vstack(rows), [cv2.IMWRITE_JPEG_QUALITY, 88])
    print("saved", a.out)


if __name__ == "__main__":
    main()
