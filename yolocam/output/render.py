"""Drawing: heatmap overlays, boxes with labels, zoomed crops of a box, and the summary picture (BGR uint8).

An overlay shows heat only where there is heat: each pixel's opacity rises with its value (zero
below `floor`), in a perceptual colour map (inferno's purple-to-yellow half), so the rest of the
image keeps its own colours and the heat can be related to the scene. Labels use Pillow's built-in
scalable font (`labels.py`).

Every picture yolocam draws puts a map on it with `draw_heat`, on the map's energy scale: a pixel is
drawn by the share of the map's heat (the sum of its values) that hotter pixels hold, so the hottest
pixels holding `HEAT_SHARE` (80 %) of the heat are tinted and those holding `OUTLINE_SHARE` (50 %) are
outlined, however sparse or flat the map is (`heat_legend` says so in pictures). The maps themselves
are not changed (the npz keeps the raw values); for one Gaussian blob the two scales are the same.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..errors import YolocamError
from ..model.pose import COCO_SKELETON, VISIBLE
from .labels import DEFAULT_COLOUR, class_colour, conf_text, draw_labelled_boxes, font_size_for, label_patch, paste


HEAT_FLOOR = 0.15   # heat below this is not drawn at all (`blend_heatmap`, raw values)
HEAT_ALPHA = 0.7    # opacity of the hottest pixels (`blend_heatmap`)
HEAT_SHARE = 0.8    # `draw_heat` tints the hottest pixels holding this share of a map's heat
OUTLINE_SHARE = 0.5  # ... and outlines those holding this share
SHOWN_ALPHA = 0.7  # `draw_heat`: opacity of the hottest pixels (the scene shows through)
ENERGY_BINS = 4096  # resolution of the raw value -> energy scale table
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


def energy_levels(heatmap) -> np.ndarray | None:
    """The energy scale of `heatmap` (values in [0, 1]; negative and NaN ones count as 0): at the raw
    values 0, 1/B, ..., 1 (B = `ENERGY_BINS`), 1 minus the share of the map's heat (sum of values) that
    pixels at least that hot hold; (B + 1,) float32, non-decreasing from 0 to 1. None for a map without heat.

    Resolution-independent (a share of area-weighted sums): the compact map gives the full map's scale.
    """
    values = np.clip(np.nan_to_num(np.asarray(heatmap, np.float32), nan=0.0), 0.0, 1.0).ravel()
    heat = np.bincount(np.minimum((values * ENERGY_BINS).astype(np.int64), ENERGY_BINS - 1), weights=values,
                       minlength=ENERGY_BINS)
    total = float(heat.sum())
    if not total > 0:
        return None
    held_above = np.cumsum(heat[::-1])[::-1] / total  # share held by the pixels in bin k and hotter
    return np.append(1.0 - held_above, 1.0).clip(0.0, 1.0).astype(np.float32)


def energy_scale(heatmap: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """`heatmap` on the energy scale `levels` (`energy_levels`): each value replaced by 1 minus the share
    of the heat held by hotter pixels, so `>= 1 - s` is the hottest region holding the share `s`."""
    values = np.clip(np.nan_to_num(np.asarray(heatmap, np.float32), nan=0.0), 0.0, 1.0)
    grid = np.linspace(0.0, 1.0, len(levels), dtype=np.float32)
    return np.interp(values, grid, levels).astype(np.float32)


def outline_width(shape) -> int:
    """Line width of a heat outline on a picture of `shape`."""
    return max(1, round(max(shape[:2]) / 320))


def draw_outline(image: np.ndarray, region: np.ndarray, width: int | None = None) -> None:
    """Outline the bool `region` in place: a white line on a black one (reads on any scene), islands
    smaller than the line itself left to their fill."""
    width = width or outline_width(image.shape)
    contours, _ = cv2.findContours(region.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    contours = [c for c in contours if cv2.contourArea(c) >= (2 * width) ** 2]
    if contours:
        cv2.drawContours(image, contours, -1, (0, 0, 0), width + 2, cv2.LINE_AA)
        cv2.drawContours(image, contours, -1, (255, 255, 255), width, cv2.LINE_AA)


def draw_heat(image: np.ndarray, heatmap: np.ndarray, levels: np.ndarray | None = None,
              alpha: float = SHOWN_ALPHA, outline: bool = True) -> np.ndarray:
    """`heatmap` (H, W) over the BGR `image` on the map's energy scale (see the module docstring); a new array.

    The hottest pixels holding `HEAT_SHARE` of the heat are tinted (inferno, opacity rising to `alpha`),
    those holding `OUTLINE_SHARE` outlined (`outline`). `levels`: the scale (`energy_levels`) of the whole
    map when `heatmap` is a part or a resized copy of it (crops), else computed from `heatmap`.
    """
    levels = energy_levels(heatmap) if levels is None else levels
    if levels is None:
        return image.copy()
    shown = energy_scale(heatmap, levels)
    out = blend_heatmap(image, shown, alpha, floor=1.0 - HEAT_SHARE)
    if outline:
        draw_outline(out, shown >= 1.0 - OUTLINE_SHARE)
    return out


LEGEND_TEXT = (f"coloured: where {HEAT_SHARE:.0%} of each box's heat lies (its hottest pixels); "
               f"outlined: where {OUTLINE_SHARE:.0%} lies")
SHORT_LEGEND = f"where {HEAT_SHARE:.0%} of the heat lies; outlined: {OUTLINE_SHARE:.0%}"


def heat_legend(width: int | None = None, height: int = 26, text: str = LEGEND_TEXT, background=(32, 32, 32),
                size: int | None = None) -> np.ndarray:
    """A BGR strip `height` px high saying what the heat colours mean: a colour bar from the edge of the
    coloured region to the peak (over grey, at the opacities drawn) with a tick where the outline is, and
    `text` in `size` px letters; `width` px wide (None: as wide as it needs)."""
    size = size or max(10, min(14, height - 10))
    bar_w, bar_h = 5 * size, max(height - 10, 6)
    patch = label_patch(text, size, background, (235, 235, 235))
    if width and bar_w + 14 + patch.shape[1] > width and text == LEGEND_TEXT:  # too narrow: the short text
        patch = label_patch(SHORT_LEGEND, size, background, (235, 235, 235))
    width = width or bar_w + 14 + patch.shape[1]
    strip = np.full((height, width, 3), background, np.uint8)
    ramp = np.linspace(1.0 - HEAT_SHARE, 1.0, bar_w, dtype=np.float32)[None].repeat(bar_h, 0)
    bar = blend_heatmap(np.full((bar_h, bar_w, 3), 128, np.uint8), ramp, SHOWN_ALPHA, floor=1.0 - HEAT_SHARE - 1e-3)
    tick = int(round((HEAT_SHARE - OUTLINE_SHARE) / HEAT_SHARE * (bar_w - 1)))
    cv2.line(bar, (tick, 0), (tick, bar_h - 1), (0, 0, 0), 3)
    cv2.line(bar, (tick, 0), (tick, bar_h - 1), (255, 255, 255), 1)
    paste(strip, bar, 4, (height - bar_h) // 2)
    paste(strip, patch[:, : max(width - bar_w - 12, 0)], bar_w + 10, max((height - patch.shape[0]) // 2, 0))
    return strip


def draw_heat_legend(image: np.ndarray, avoid=None) -> None:
    """A small `heat_legend` in the corner of `image` farthest from the box `avoid` (xyxy), in place;
    nothing on pictures under 200 px a side."""
    h, w = image.shape[:2]
    if min(h, w) < 200:
        return
    size = font_size_for(image.shape, 0.018, 10, 20)
    strip = heat_legend(None, size + 10, SHORT_LEGEND, size=size)[:, : w - 8]
    sh, sw = strip.shape[:2]
    corners = [(w - sw - 4, h - sh - 4), (4, h - sh - 4), (w - sw - 4, 4), (4, 4)]
    if avoid is not None:
        cx, cy = (avoid[0] + avoid[2]) / 2, (avoid[1] + avoid[3]) / 2
        corners.sort(key=lambda c: -((c[0] + sw / 2 - cx) ** 2 + (c[1] + sh / 2 - cy) ** 2))
    x, y = corners[0]
    cv2.rectangle(image, (x - 1, y - 1), (x + sw, y + sh), (0, 0, 0), 1)
    paste(image, strip, x, y)


def draw_box(image: np.ndarray, box, label: str, colour=DEFAULT_COLOUR, polygon=None) -> None:
    """Draw an xyxy box (or, given, the rotated box's 4 corners `polygon`) and its label in place
    (Pillow's built-in font: nothing to download)."""
    draw_labelled_boxes(image, [box], [label], [colour], polygons=[polygon])


def draw_boxes(image: np.ndarray, dets, labels=None, size: int | None = None) -> None:
    """Draw detections' boxes (rotated ones as polygons) with non-overlapping labels (default `name conf`),
    one colour per class."""
    labels = labels if labels is not None else [f"{d.name} {conf_text(d.conf)}" for d in dets]
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


def zoomed_region(image: np.ndarray, heatmap: np.ndarray, box, size: int, context: float):
    """The box plus `context` cut from the image and its map and zoomed so that the long side is `size`:
    (image crop, map crop float32, gain, (x0, y0) of the cut in the original)."""
    rx1, ry1, rx2, ry2 = crop_region(image.shape, box, context)
    gain = size / max(rx2 - rx1, ry2 - ry1)
    nw, nh = max(int(round((rx2 - rx1) * gain)), 1), max(int(round((ry2 - ry1) * gain)), 1)
    interp = cv2.INTER_AREA if gain < 1 else cv2.INTER_LINEAR
    img = cv2.resize(np.ascontiguousarray(image[ry1:ry2, rx1:rx2]), (nw, nh), interpolation=interp)
    heat = cv2.resize(np.ascontiguousarray(heatmap[ry1:ry2, rx1:rx2], dtype=np.float32), (nw, nh),
                      interpolation=cv2.INTER_LINEAR)
    return img, heat, gain, (rx1, ry1)


def box_crop(image: np.ndarray, heatmap: np.ndarray, box, label: str | None = None, size: int = 256,
             context: float = 0.6, colour=DEFAULT_COLOUR, alpha: float = SHOWN_ALPHA, polygon=None, keypoints=None,
             levels: np.ndarray | None = None, segments=None) -> np.ndarray:
    """A zoomed view of one detection: the box plus context, scaled so its longer side is `size`,
    with the heat drawn at that scale (`draw_heat`, on the whole map's energy scale `levels`, by default
    computed from `heatmap`) and the box in `colour` (or the rotated box's corners `polygon`, and
    `label`, if given) on top, its mask's outlines `segments` (segmentation) and `keypoints` (pose)
    when given."""
    levels = energy_levels(heatmap) if levels is None else levels
    img, heat, gain, (rx1, ry1) = zoomed_region(image, heatmap, box, size, context)
    out = draw_heat(img, heat, levels, alpha) if levels is not None else img
    if segments:
        draw_segments(out, [[[(x - rx1) * gain, (y - ry1) * gain] for x, y in seg] for seg in segments], colour)
    local = [(box[0] - rx1) * gain, (box[1] - ry1) * gain, (box[2] - rx1) * gain, (box[3] - ry1) * gain]
    poly = None if polygon is None else [[(x - rx1) * gain, (y - ry1) * gain] for x, y in polygon]
    draw_labelled_boxes(out, [local], [label or ""], [colour], size=font_size_for(out.shape, 0.06, 11, 20),
                        width=max(2, size // 128), polygons=[poly])
    if keypoints is not None:
        draw_keypoints(out, [[(k[0] - rx1) * gain, (k[1] - ry1) * gain, *k[2:]] for k in keypoints])
    return out


def detection_levels(det) -> np.ndarray | None:
    """The energy scale (`energy_levels`) of a detection's whole map, from its compact map when it has one."""
    compact = getattr(det, "compact_heatmap", None)
    return energy_levels(compact if compact is not None else det.heatmap)


def segments_of(det):
    """A segmentation detection's mask outlines (original-image pixels), else None."""
    return det.segments if getattr(det, "instance_mask", None) is not None else None


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
    h, w = result.image.shape[:2]
    image_level = n > 0 and all(np.allclose(d.box, [0, 0, w, h], atol=0.5) for d in dets_all)  # classification
    note = f"{n} detection{'s' if n != 1 else ''}" if not image_level else \
        f"{n} class{'es' if n != 1 else ''}, one image-level map each (the tiles name them)"
    if len(dets) < n:
        note += f", showing the {len(dets)} most confident (all of them are in the gallery)"
    # the overview: the whole image with every box, labelled with its tile number
    gain = min(width / w, 3.0 * tile / max(h, 1), 3.0)
    ow, oh = max(int(round(w * gain)), 1), max(int(round(h * gain)), 1)
    over = cv2.resize(result.image, (ow, oh), interpolation=cv2.INTER_AREA if gain < 1 else cv2.INTER_LINEAR)
    scaled = [type("D", (), {"box": [v * gain for v in d.box], "cls": d.cls, "name": d.name, "conf": d.conf,
                             "polygon": scale_polygon(getattr(d, "polygon", None), gain, gain)}) for d in dets_all]
    labels = ([f"#{k} {d.name} {conf_text(d.conf)}" for k, d in enumerate(dets_all)] if n <= 12
              else [f"#{k}" if k < len(dets) else "" for k in range(n)])
    for d in dets_all:  # segmentation and pose models: the masks' outlines and the keypoints, as in the overlays
        if getattr(d, "instance_mask", None) is not None:
            draw_segments(over, d.segments, class_colour(d.cls), gain, gain)
        draw_keypoints(over, getattr(d, "keypoints", None), gain, gain)
    if not image_level:  # image-level maps (classification) have no box of their own: the tiles name the classes
        draw_boxes(over, scaled, labels, size=max(12, min(18, tile // 14)))
    top = np.full((oh, width, 3), 32, np.uint8)
    top[:, (width - ow) // 2:(width - ow) // 2 + ow] = over
    parts = [_caption(width, note, 15, 26), top, heat_legend(width)]
    cap = 22
    rows = int(np.ceil(len(dets) / cols))
    if rows:
        grid = np.full((rows * (tile + cap), width, 3), 32, np.uint8)
        for k, d in enumerate(dets):
            crop = box_crop(result.image, d.heatmap, d.box, None, size=tile, colour=class_colour(d.cls),
                            polygon=getattr(d, "polygon", None), keypoints=getattr(d, "keypoints", None),
                            levels=detection_levels(d), segments=segments_of(d))
            r, c = divmod(k, cols)
            y0, x0 = r * (tile + cap), c * tile
            ch, cw = crop.shape[:2]
            grid[y0 + (tile - ch) // 2:y0 + (tile - ch) // 2 + ch, x0 + (tile - cw) // 2:x0 + (tile - cw) // 2 + cw] = crop
            grid[y0 + tile:y0 + tile + cap, x0:x0 + tile] = _caption(tile, f"#{k} {d.name} {conf_text(d.conf)}", 13, cap)
            cv2.rectangle(grid, (x0, y0), (x0 + tile - 1, y0 + tile + cap - 1), (80, 80, 80), 1)
        parts.append(grid)
    return np.concatenate(parts, axis=0)
