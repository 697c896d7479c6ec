"""The before/after picture of issue 26: the demo scene's boxes drawn as the earlier overlay drew them
(raw map values coloured from 0.15, every box amber) and as yolocam draws them now (the map's energy
scale: where 80 % of the heat lies coloured, 50 % outlined; each class its colour), for the default
method and for the sparser ssgradcam++ (the earlier default). The maps are the same in both rows.

    python examples/visible_heat_picture.py [--seed 0] [--out examples/images/visible_heat.jpg]
"""

import argparse

import cv2
import numpy as np

import yolocam
from yolocam.demo.scenes import make_scene
from yolocam.output.labels import DEFAULT_COLOUR, draw_labelled_boxes, label_patch
from yolocam.output import render
from yolocam.output.render import blend_heatmap, box_crop, class_colour, crop_region, detection_levels, heat_legend

SIZE = 180  # px per tile
METHODS = [("the default (aalayercam)", "aalayercam"), ("ssgradcam++ (the earlier default)", "ssgradcam++")]


def earlier_crop(image: np.ndarray, heat: np.ndarray, box, label: str) -> np.ndarray:
    """A box's crop as the earlier overlay drew it: raw values from 0.15 up, the box in amber."""
    x1, y1, x2, y2 = crop_region(image.shape, box)
    gain = SIZE / max(x2 - x1, y2 - y1)
    size = (max(round((x2 - x1) * gain), 1), max(round((y2 - y1) * gain), 1))
    out = blend_heatmap(cv2.resize(image[y1:y2, x1:x2], size), cv2.resize(heat[y1:y2, x1:x2], size))
    local = [(box[0] - x1) * gain, (box[1] - y1) * gain, (box[2] - x1) * gain, (box[3] - y1) * gain]
    draw_labelled_boxes(out, [local], [label], [DEFAULT_COLOUR], size=13, width=2)
    return out


def tile(crop: np.ndarray) -> np.ndarray:
    out = np.full((SIZE, SIZE, 3), 32, np.uint8)
    out[:crop.shape[0], :crop.shape[1]] = crop
    return out


def title(width: int, text: str) -> np.ndarray:
    bar = np.full((24, width, 3), 32, np.uint8)
    patch = label_patch(text, 14, (32, 32, 32), (235, 235, 235))
    bar[(24 - patch.shape[0]) // 2:(24 - patch.shape[0]) // 2 + patch.shape[0], 4:4 + min(patch.shape[1], width - 4)] = \
        patch[:, :width - 4]
    return bar


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--boxes", type=int, default=4)
    ap.add_argument("--out", default="examples/images/visible_heat.jpg")
    a = ap.parse_args()
    image = make_scene(a.seed).image
    parts = []
    for name, method in METHODS:
        result = yolocam.Explainer("demo-v8", method=method, layers="fine+backbone", fuse="gate").explain(image)[0]
        dets = result.detections[:a.boxes]
        before = np.hstack([tile(earlier_crop(image, d.heatmap, d.box, f"{d.name} {d.conf:.2f}")) for d in dets])
        after = np.hstack([tile(box_crop(image, d.heatmap, d.box, f"{d.name} {d.conf:.2f}", size=SIZE,
                                         colour=class_colour(d.cls), levels=detection_levels(d))) for d in dets])
        width = before.shape[1]
        parts += [title(width, f"{name}, before: raw values coloured from 0.15, every box amber"), before,
                  title(width, f"{name}, after: the same maps on their energy scale, class colours"), after]
    picture = np.vstack(parts + [heat_legend(width, text=render.SHORT_LEGEND)])
    cv2.imwrite(a.out, picture, [cv2.IMWRITE_JPEG_QUALITY, 82])
    print("saved", a.out, picture.shape[1::-1])


if __name__ == "__main__":
    main()
