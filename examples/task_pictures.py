"""The README's picture of every task: one held-out shape scene per demo model, explained per instance.

    python examples/task_pictures.py [--seed 8] [--out examples/images/tasks.jpg]

Rows: `demo-seg` with the `mask` target (its mask outline drawn), `demo-pose` with each `keypoint:K`
target of one shape (the keypoint asked about circled), `demo-obb` with the default `class` target
(rotated boxes drawn), and `demo-cls` with one map per top class of one crop (image-level). Each tile
is the region around the instance, its heat drawn on the map's energy scale (`render.draw_heat`, the legend
beneath), so it shows what the overlays show.
"""

import argparse

import cv2
import numpy as np

import yolocam
from yolocam.demo.scenes import make_scene, scene_seed
from yolocam.demo.task_labels import KEYPOINT_NAMES, classify_crops
from yolocam.output.render import (class_colour, crop_region, detection_levels, draw_heat, draw_keypoints,
                                   draw_segments, heat_legend)

TILE = 180


def tile(result, k: int, caption: str, point=None, whole: bool = False) -> np.ndarray:
    """Detection k's heat over the region around its box (or the whole image), zoomed to TILE px, with its
    box, rotated box, mask outline or keypoints drawn as the overlays draw them, and a caption."""
    d, image = result.detections[k], result.image
    x0, y0, x1, y1 = (0, 0, image.shape[1], image.shape[0]) if whole else crop_region(
        image.shape[:2], d.box, context=0.45, min_side=48)
    g = TILE / max(x1 - x0, y1 - y0)
    size = (max(1, round((x1 - x0) * g)), max(1, round((y1 - y0) * g)))
    zoom = cv2.resize(image[y0:y1, x0:x1], size, interpolation=cv2.INTER_LINEAR)
    heat = cv2.resize(d.heatmap[y0:y1, x0:x1], size, interpolation=cv2.INTER_LINEAR)
    over = draw_heat(zoom, heat, detection_levels(d))  # the whole map's energy scale, as every overlay draws it
    shift = lambda pts: (np.asarray(pts, np.float32).reshape(-1, 2) - (x0, y0)) * g  # noqa: E731
    colour = class_colour(d.cls)
    if d.polygon is not None:
        cv2.polylines(over, [np.round(shift(d.polygon)).astype(np.int32)], True, colour, 2, cv2.LINE_AA)
    elif d.instance_mask is not None:
        draw_segments(over, [shift(seg) for seg in d.segments], colour)
    elif not whole:
        bx = np.round(shift(np.reshape(d.box, (2, 2)))).astype(int)
        cv2.rectangle(over, tuple(bx[0]), tuple(bx[1]), colour, 2, cv2.LINE_AA)
    if d.keypoints is not None:
        kp = np.asarray(d.keypoints, np.float32)
        draw_keypoints(over, np.concatenate([shift(kp[:, :2]), kp[:, 2:]], 1))
    if point is not None:
        cx, cy = shift(point[:2])[0]
        cv2.circle(over, (int(round(cx)), int(round(cy))), 9, (255, 255, 255), 2, cv2.LINE_AA)
    out = np.full((TILE + 22, TILE, 3), 32, np.uint8)
    out[(TILE - over.shape[0]) // 2:(TILE - over.shape[0]) // 2 + over.shape[0],
        (TILE - over.shape[1]) // 2:(TILE - over.shape[1]) // 2 + over.shape[1]] = over
    cv2.putText(out, caption, (4, TILE + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (235, 235, 235), 1, cv2.LINE_AA)
    return out


def row(title: str, tiles: list[np.ndarray], cols: int) -> np.ndarray:
    tiles = tiles[:cols] + [np.full_like(tiles[0], 32)] * (cols - len(tiles[:cols]))
    body = np.hstack(tiles)
    bar = np.full((26, body.shape[1], 3), 20, np.uint8)
    cv2.putText(bar, title, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (235, 235, 235), 1, cv2.LINE_AA)
    return np.vstack([bar, body])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=8)
    ap.add_argument("--cols", type=int, default=6)
    ap.add_argument("--out", default="examples/images/tasks.jpg")
    a = ap.parse_args()
    image = make_scene(scene_seed(2026, "test", a.seed)).image
    rows = []

    res = yolocam.Explainer("demo-seg", target="mask").explain(image)[0]
    rows.append(row("segmentation (demo-seg), target mask: which pixels made this mask",
                    [tile(res, k, f"#{k} {d.name} {d.conf:.2f}") for k, d in enumerate(res.detections)], a.cols))

    res = yolocam.Explainer("demo-obb").explain(image)[0]
    rows.append(row("oriented boxes (demo-obb), target class", [tile(res, k, f"#{k} {d.name} {d.conf:.2f}")
                                                                for k, d in enumerate(res.detections)], a.cols))

    tiles = []
    for k, name in enumerate(KEYPOINT_NAMES):
        res = yolocam.Explainer("demo-pose", target=f"keypoint:{name}").explain(image)[0]
        d = res.detections[0]
        tiles.append(tile(res, 0, f"keypoint:{name}", point=d.keypoints[k]))
    res = yolocam.Explainer("demo-pose").explain(image)[0]
    tiles.append(tile(res, 0, f"class ({res.detections[0].name})"))
    rows.append(row("pose (demo-pose), one shape: target keypoint:K (circled) and class", tiles, a.cols))

    crops = []
    for i in range(3):
        seed = scene_seed(2026, "test", a.seed + i)
        crops += [c[0] for c in classify_crops(make_scene(seed), seed)]
    results = yolocam.Explainer("demo-cls").explain(crops[:a.cols], max_det=1)
    rows.append(row("classification (demo-cls), crops: the top class's map (image-level)",
                    [tile(r, 0, f"{r.detections[0].name} {r.detections[0].conf:.2f}", whole=True) for r in results],
                    a.cols))
    rows.append(heat_legend(rows[0].shape[1]))  # what the colours mean
    cv2.imwrite(a.out, np.vstack(rows), [cv2.IMWRITE_JPEG_QUALITY, 88])
    print("saved", a.out)


if __name__ == "__main__":
    main()
