"""Drawing: heatmap overlays, boxes with labels, zoomed crops of a box, and the summary picture (BGR uint8).

An overlay shows heat only where there is heat: each pixel's opacity rises with its value (zero
below `floor`), in a perceptual colour map (inferno's purple-to-yellow half), so the rest of the
image keeps its own colours and the heat can be related to the scene. Labels use Pillow's built-in
scalable font (`labels.py`).
"""

from __future__ import annotations

import cv2
import numpy as np

from ..errors import YolocamError
from ..model.pose import COCO_SKELETON, VISIBLE
from .labels import DEFAULT_COLOUR, class_colour, draw_labelled_boxes, font_size_for, label_patch, paste


HEAT_FLOOR = 0.15   # heat below this is not drawn at all
HEAT_ALPHA = 0.7    # opacity of the hottest pixels
CROP_SIDE = 320     # long side of a detection's zoomed crop (gallery cards)
_CMAP = cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, None], cv2.COLORMAP_INFERNO)[:, 0, :].astype(np.float32)


def heat_luts(alpha: float = HEAT_ALPHA, floor: float = HEAT_FLOOR, gamma: float = 0.7):
    """(colour (256, 3) float32 BGR, opacity (256,) float32) for heat values quantised to 0..255."""
    v = np.arange(256, dtype=np.float32) / 255.0
    t = np.clip((v - floor) / max(1.0 - floor, 1e-6), 0.0, 1.0)
    opacity = alpha * t ** gamma
    colour = _CMAP[np.round(70 + t * 160).astype(int)]  # inferno from purple (70) to saturated orange-yellow (230)
    return colour, opacity.astype(np.float32)


_LUTS: dict = {}


def blend_heatmap(image: np.ndarray, heatmap: np.ndarray, alpha: float = HEAT_ALPHA, floor: float = HEAT_FLOOR,
                  dim: float = 0.0) -> np.ndarray:
    """`heatmap` (H, W) in [0, 1] drawn over the BGR `image`; returns a new uint8 array.

    Opacity rises from 0 at `floor` to `alpha` at 1, colours follow inferno; pixels without heat keep
    their colour, multiplied by `1 - dim` (0: unchanged).
    """
    key = (round(float(alpha), 4), round(float(floor), 4))
    if key not in _LUTS:
        _LUTS[key] = heat_luts(*key)
    colours, opacity = _LUTS[key]
    out = image.copy() if dim <= 0 else (image.astype(np.float32) * (1.0 - dim)).astype(np.uint8)
    q = np.clip(np.nan_to_num(heatmap, nan=0.0) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    hot = q > int(floor * 255)
    rows, cols = np.flatnonzero(hot.any(axis=1)), np.flatnonzero(hot.any(axis=0))
    if rows.size == 0:
        return out
    sl = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))  # only the part with heat
    qs, base = q[sl], out[sl].astype(np.float32)
    a = opacity[qs][..., None]
    out[sl] = np.clip(base + (colours[qs] - base) * a + 0.5, 0, 255).astype(np.uint8)
    return out


def draw_box(image: np.ndarray, box, label: str, colour=DEFAULT_COLOUR, polygon=None) -> None:
    """Draw an xyxy box (or, given, the rotated box's 4 corners `polygon`) and its label in place
    (Pillow's built-in font: nothing to download)."""
    draw_labelled_boxes(image, [box], [label], [colour], polygons=[polygon])


def draw_boxes(image: np.ndarray, dets, labels=None, size: int | None = None) -> None:
    """Draw detections' boxes (rotated ones as polygons) with non-overlapping labels (default `name conf`),
    one colour per class."""
    labels = labels if labels is not None else [f"{d.name} {d.conf:.2f}" for d in dets]
    draw_labelled_boxes(image, [d.box for d in dets], labels, [class_colour(d.cls) for d in dets], size=size,
                        polygons=[getattr(d, "polygon", None) for d in dets])
    for d in dets:  # segmentation models: the mask outlines
        if getattr(d, "instance_mask", None) is not None:
            draw_segments(image, d.segments, class_colour(d.cls))


def draw_segments(image: np.ndarray, segments, colour=DEFAULT_COLOUR, gx: float = 1.0, gy: float = 1.0) -> None:
    """Draw a mask's outlines (polygons [[x, y], ...] in image pixels, scaled by gx, gy) in place; None: nothing."""
    if not segments:
        return
    pts = [np.round(np.asarray(seg, np.float32).reshape(-1, 2) * (gx, gy)).astype(np.int32) for seg in segments if len(seg)]
    thickness = max(1, round(max(image.shape[:2]) / 400))
    cv2.polylines(image, pts, True, tuple(int(c) for c in colour), thickness, cv2.LINE_AA)


KEYPOINT_COLOUR = (0, 255, 0)  # BGR: visible keypoints
LIMB_COLOUR = (255, 160, 0)    # BGR: COCO skeleton limbs between two visible keypoints


def draw_keypoints(image: np.ndarray, keypoints, gx: float = 1.0, gy: float = 1.0) -> None:
    """Draw keypoints (K, 2 or 3) [x, y(, visibility score)] in place, scaled by (gx, gy): a circle per
    visible one (score > 0.5, as ultralytics; all without scores), and the COCO skeleton when K == 17."""
    if keypoints is None or len(keypoints) == 0:
        return
    kpts = np.asarray(keypoints, np.float32).reshape(len(keypoints), -1)
    xy = kpts[:, :2] * np.float32([gx, gy])
    seen = kpts[:, 2] > VISIBLE if kpts.shape[1] > 2 else np.ones(len(kpts), bool)
    h, w = image.shape[:2]
    seen &= (xy[:, 0] >= 0) & (xy[:, 0] < w) & (xy[:, 1] >= 0) & (xy[:, 1] < h)
    radius, width = max(2, round(min(h, w) / 120)), max(1, round(min(h, w) / 240))
    pts = np.round(xy).astype(int)
    if len(kpts) == 17:
        for a, b in COCO_SKELETON:
            if seen[a] and seen[b]:
                cv2.line(image, tuple(pts[a]), tuple(pts[b]), LIMB_COLOUR, width, cv2.LINE_AA)
    for (x, y), ok in zip(pts, seen):
        if ok:
            cv2.circle(image, (int(x), int(y)), radius, KEYPOINT_COLOUR, -1, cv2.LINE_AA)


def scale_polygon(polygon, gx: float, gy: float):
    """A polygon [[x, y], ...] scaled by (gx, gy), or None for None."""
    return None if polygon is None else [[x * gx, y * gy] for x, y in polygon]


def crop_region(shape, box, context: float = 0.6, min_side: int = 48) -> tuple[int, int, int, int]:
    """A square region (x1, y1, x2, y2) around `box` with `context` x its longer side on each side, in the image."""
    h, w = shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(max(x2 - x1, y2 - y1) * (1.0 + 2.0 * context), min_side)
    side_x, side_y = min(side, w), min(side, h)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    rx1 = int(round(min(max(cx - side_x / 2, 0), w - side_x)))
    ry1 = int(round(min(max(cy - side_y / 2, 0), h - side_y)))
    return rx1, ry1, max(rx1 + int(round(side_x)), rx1 + 1), max(ry1 + int(round(side_y)), ry1 + 1)


def box_crop(image: np.ndarray, heatmap: np.ndarray, box, label: str | None = None, size: int = 256,
             context: float = 0.6, colour=DEFAULT_COLOUR, alpha: float = HEAT_ALPHA, polygon=None, keypoints=None) -> np.ndarray:
    """A zoomed view of one detection: the box plus context, scaled so its longer side is `size`,
    with the heat drawn at that scale and the box (or the rotated box's corners `polygon`, and
    `label`, if given) on top, and its `keypoints` (pose models) when given."""
    rx1, ry1, rx2, ry2 = crop_region(image.shape, box, context)
    gain = size / max(rx2 - rx1, ry2 - ry1)
    nw, nh = max(int(round((rx2 - rx1) * gain)), 1), max(int(round((ry2 - ry1) * gain)), 1)
    interp = cv2.INTER_AREA if gain < 1 else cv2.INTER_LINEAR
    img = cv2.resize(np.ascontiguousarray(image[ry1:ry2, rx1:rx2]), (nw, nh), interpolation=interp)
    heat = cv2.resize(np.ascontiguousarray(heatmap[ry1:ry2, rx1:rx2], dtype=np.float32), (nw, nh),
                      interpolation=cv2.INTER_LINEAR)
    out = blend_heatmap(img, heat, alpha)
    local = [(box[0] - rx1) * gain, (box[1] - ry1) * gain, (box[2] - rx1) * gain, (box[3] - ry1) * gain]
    poly = None if polygon is None else [[(x - rx1) * gain, (y - ry1) * gain] for x, y in polygon]
    draw_labelled_boxes(out, [local], [label or ""], [colour], size=font_size_for(out.shape, 0.06, 11, 20),
                        width=max(2, size // 128), polygons=[poly])
    if keypoints is not None:
        draw_keypoints(out, [[(k[0] - rx1) * gain, (k[1] - ry1) * gain, *k[2:]] for k in keypoints])
    return out


def _caption(width: int, text: str, size: int = 14, height: int = 22) -> np.ndarray:
    strip = np.full((height, width, 3), 32, np.uint8)
    patch = label_patch(text, size, (32, 32, 32), (235, 235, 235))
    paste(strip, patch[:, : width - 4], 2, max((height - patch.shape[0]) // 2, 0))
    return strip


def summary_columns(n: int) -> int:
    """How many tile columns `summary_grid` uses for `n` detection tiles (2 to 8, wider than tall)."""
    return max(2, min(int(np.ceil(np.sqrt(max(n, 1)) * 1.25)), 8, max(n, 2)))


def summary_grid(result, tile: int = 240, max_tiles: int = 25, cols: int | None = None) -> np.ndarray:
    """One BGR picture of an `ImageExplanation`'s results: the image with every box numbered on top, then a
    grid of tiles, one zoomed crop (box plus context, its heat, caption `#k name conf`) per detection.

    At most `max_tiles - 1` detections get a tile (highest confidence first); a note above says
    how many are shown when some are left out. Tiles are `tile` x (`tile` + 22 px caption).
    """
    if result.image is None:
        raise YolocamError(f"summary_grid: expected an explained image, got an error result ({result.error})")
    dets_all = result.detections
    dets = dets_all[: max(max_tiles - 1, 0)]
    cols = cols or summary_columns(len(dets))
    width = cols * tile
    n = len(dets_all)
    note = f"{n} detection{'s' if n != 1 else ''}"
    if len(dets) < n:
        note += f", showing the {len(dets)} most confident (all of them are in the gallery)"
    # the overview: the whole image with every box, labelled with its tile number
    h, w = result.image.shape[:2]
    gain = min(width / w, 3.0 * tile / max(h, 1), 3.0)
    ow, oh = max(int(round(w * gain)), 1), max(int(round(h * gain)), 1)
    over = cv2.resize(result.image, (ow, oh), interpolation=cv2.INTER_AREA if gain < 1 else cv2.INTER_LINEAR)
    scaled = [type("D", (), {"box": [v * gain for v in d.box], "cls": d.cls, "name": d.name, "conf": d.conf})
              for d in dets_all]
    labels = ([f"#{k} {d.name} {d.conf:.2f}" for k, d in enumerate(dets_all)] if n <= 12
              else [f"#{k}" if k < len(dets) else "" for k in range(n)])
    draw_boxes(over, scaled, labels, size=max(12, min(18, tile // 14)))
    top = np.full((oh, width, 3), 32, np.uint8)
    top[:, (width - ow) // 2:(width - ow) // 2 + ow] = over
    parts = [_caption(width, note, 15, 26), top]
    cap = 22
    rows = int(np.ceil(len(dets) / cols))
    if rows:
        grid = np.full((rows * (tile + cap), width, 3), 32, np.uint8)
        for k, d in enumerate(dets):
            crop = box_crop(result.image, d.heatmap, d.box, None, size=tile, colour=class_colour(d.cls),
                            polygon=getattr(d, "polygon", None), keypoints=getattr(d, "keypoints", None))
            r, c = divmod(k, cols)
            y0, x0 = r * (tile + cap), c * tile
            ch, cw = crop.shape[:2]
            grid[y0 + (tile - ch) // 2:y0 + (tile - ch) // 2 + ch, x0 + (tile - cw) // 2:x0 + (tile - cw) // 2 + cw] = crop
            grid[y0 + tile:y0 + tile + cap, x0:x0 + tile] = _caption(tile, f"#{k} {d.name} {d.conf:.2f}", 13, cap)
            cv2.rectangle(grid, (x0, y0), (x0 + tile - 1, y0 + tile + cap - 1), (80, 80, 80), 1)
        parts.append(grid)
    return np.concatenate(parts, axis=0)
