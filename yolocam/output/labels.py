"""Box labels drawn with a real scalable font, placed so that labels of nearby boxes do not cover each other.

Text is rendered with Pillow's built-in font (`ImageFont.load_default(size=...)`, shipped inside
Pillow: nothing is downloaded), so "0.95" reads as 0.95 at any size. Each label is rendered once
into a small BGR patch (cached) and pasted; placement tries a few spots around each box (above,
inside, below, either side) and keeps the first that covers no label placed before it.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

# Box colours (BGR) for classes: bright, distinct, readable with black text on them.
PALETTE = ((56, 222, 255), (255, 194, 0), (122, 255, 74), (255, 128, 255), (80, 170, 255), (255, 255, 102),
           (160, 160, 255), (200, 255, 170), (255, 160, 120), (130, 230, 230))
DEFAULT_COLOUR = (56, 222, 255)  # amber: stands out on photos and on the heat colours


def class_colour(cls: int) -> tuple[int, int, int]:
    """A fixed colour (BGR) for class index `cls`: `PALETTE` for the first ten, then `_extra_colours` (36 hues
    at eight saturation/brightness steps, in an order that keeps each new class far from all before it), so
    that an 80-class model's colours stay apart (`text_colour` keeps each label readable on its colour)."""
    cls = int(cls)
    if 0 <= cls < len(PALETTE):
        return PALETTE[cls]
    extra = _extra_colours()
    return extra[(cls - len(PALETTE)) % len(extra)]


# (saturation, brightness) steps of the colours past `PALETTE`, 36 hues each (288 colours)
EXTRA_TONES = ((1.0, 1.0), (0.6, 1.0), (0.3, 1.0), (1.0, 0.75), (0.6, 0.75), (1.0, 0.5), (0.6, 0.5), (0.3, 0.7))
MIN_DISTANCE = 30  # RGB: a new colour keeps at least this from every one before it while any candidate can


@lru_cache(maxsize=1)
def _extra_colours() -> tuple[tuple[int, int, int], ...]:
    """Colours for classes past `PALETTE`, chosen greedily: each next one is the candidate farthest, in CIELAB
    (perceived difference), from `PALETTE` and every colour chosen before, among those at least `MIN_DISTANCE`
    (RGB) from them all while there are such. 80 classes: closest pair 19 in CIELAB (the earlier fixed order:
    3.7, two nearly equal ambers) and 31 in RGB."""
    import colorsys

    cands = np.array([[round(c * 255) for c in reversed(colorsys.hsv_to_rgb(i / 36, sat, val))]
                      for sat, val in EXTRA_TONES for i in range(36)], np.float64)  # BGR

    def lab(bgr: np.ndarray) -> np.ndarray:
        out = cv2.cvtColor(bgr.astype(np.uint8)[None], cv2.COLOR_BGR2LAB)[0].astype(np.float64)
        return out * (100 / 255, 1, 1) - (0, 128, 128)

    pal = np.array(PALETTE, np.float64)
    cand_lab, pal_lab = lab(cands), lab(pal)
    near_rgb = np.linalg.norm(cands[:, None] - pal[None], axis=-1).min(1)
    near_lab = np.linalg.norm(cand_lab[:, None] - pal_lab[None], axis=-1).min(1)
    left = np.ones(len(cands), bool)
    order = []
    for _ in range(len(cands)):
        score = np.where(left, (near_rgb >= MIN_DISTANCE) * 1e3 + near_lab, -np.inf)
        k = int(np.argmax(score))
        order.append(k)
        left[k] = False
        near_rgb = np.minimum(near_rgb, np.linalg.norm(cands - cands[k], axis=-1))
        near_lab = np.minimum(near_lab, np.linalg.norm(cand_lab - cand_lab[k], axis=-1))
    return tuple(tuple(int(v) for v in cands[k]) for k in order)


def conf_text(conf: float, digits: int = 2) -> str:
    """A confidence for a label: `digits` decimals, or two significant digits under 10**-digits (not "0.00"
    for every box of a run at --conf 0.0001)."""
    conf = float(conf)
    return f"{conf:.{digits}f}" if conf >= 10.0 ** -digits or conf <= 0 else f"{conf:.2g}"


def font_size_for(shape, scale: float = 0.024, lo: int = 11, hi: int = 40) -> int:
    """A label font size (px) that reads well on an image of `shape` (H, W, ...)."""
    return int(min(max(round(scale * max(shape[:2])), lo), hi))


def line_width_for(shape) -> int:
    return max(1, round(max(shape[:2]) / 450))


@lru_cache(maxsize=8)
def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


@lru_cache(maxsize=1024)
def _patch(text: str, size: int, bg: tuple, fg: tuple) -> np.ndarray:
    """The label `text` on a `bg` box with `fg` letters, as a read-only BGR array."""
    from PIL import Image, ImageDraw

    font = _font(size)
    ascent, descent = font.getmetrics()
    left, _, right, _ = font.getbbox(text)
    pad = max(2, size // 5)
    w, h = max(right - left, 1) + 2 * pad, ascent + descent + pad
    im = Image.new("RGB", (w, h), tuple(reversed(bg)))
    ImageDraw.Draw(im).text((pad - left, pad // 2), text, font=font, fill=tuple(reversed(fg)))
    arr = np.ascontiguousarray(np.asarray(im)[:, :, ::-1])
    arr.setflags(write=False)
    return arr


def text_colour(bg) -> tuple[int, int, int]:
    """Black or white, whichever reads better on `bg` (BGR)."""
    b, g, r = bg
    return (0, 0, 0) if 0.114 * b + 0.587 * g + 0.299 * r > 140 else (255, 255, 255)


def label_patch(text: str, size: int, bg=DEFAULT_COLOUR, fg=None) -> np.ndarray:
    """A BGR array holding `text` in Pillow's default font at `size` px on a `bg` box (do not modify it)."""
    bg = tuple(int(v) for v in bg)
    return _patch(text, int(size), bg, tuple(fg) if fg is not None else text_colour(bg))


def paste(image: np.ndarray, patch: np.ndarray, x: int, y: int) -> None:
    """Copy `patch` into `image` with its top-left corner at (x, y), clipped to the image."""
    h, w = image.shape[:2]
    ph, pw = patch.shape[:2]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + pw, w), min(y + ph, h)
    if x1 > x0 and y1 > y0:
        image[y0:y1, x0:x1] = patch[y0 - y:y1 - y, x0 - x:x1 - x]


def _overlap(a, b) -> int:
    return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))


def place_labels(boxes, sizes, shape) -> list[tuple[int, int]]:
    """Top-left corners for labels of `sizes` [(w, h)] beside `boxes` (xyxy) inside an image of `shape`.

    Boxes are served in order (put the most important first); each label takes the first candidate
    spot (above the box, inside its top, below it, right-aligned variants, then further away, nearest
    first) that overlaps no label placed before, else the spot with the least overlap.
    """
    H, W = shape[:2]
    placed: list[tuple[int, int, int, int]] = []
    rects = [tuple(int(round(v)) for v in b) for b in boxes]
    out = []
    for i, (box, (w, h)) in enumerate(zip(boxes, sizes)):
        x1, y1, x2, y2 = rects[i]
        # small boxes of other detections should stay visible too (large ones would leave no room)
        small = [r for j, r in enumerate(rects) if j != i and (r[2] - r[0]) * (r[3] - r[1]) < 4 * w * h]
        cands = [(x1, y1 - h), (x1, y1), (x1, y2), (x2 - w, y1 - h), (x2 - w, y1), (x1, y2 - h), (x2 - w, y2),
                 (x2, y1), (x1 - w, y1)]
        # then further away, nearest first: rows of label height above and below, half-label steps sideways
        far = [(x1 + dx * (w // 2), y1 - h + dy * h) for dy in range(-10, 11) for dx in range(-3, 4)]
        cands += sorted(far, key=lambda p: abs(p[0] - x1) + abs(p[1] - (y1 - h)))
        best, best_cost = None, None
        for i, (cx, cy) in enumerate(cands):
            cx, cy = min(max(cx, 0), max(W - w, 0)), min(max(cy, 0), max(H - h, 0))
            rect = (cx, cy, cx + w, cy + h)
            cost = 10 * sum(_overlap(rect, p) for p in placed) + sum(_overlap(rect, r) for r in small)
            if cost == 0:
                best = rect
                break
            if best_cost is None or cost < best_cost:
                best, best_cost = rect, cost
        placed.append(best)
        out.append((best[0], best[1]))
    return out


HIDDEN_SHARE = 0.1  # a label that would overlap earlier labels by more than this share of its area is not drawn


def draw_labelled_boxes(image: np.ndarray, boxes, labels, colours=None, size: int | None = None,
                        width: int | None = None, polygons=None) -> None:
    """Draw xyxy `boxes` (outlined in black for contrast) and their `labels` in place, labels not overlapping.

    Empty labels draw no text; a label left without a spot that keeps it clear of the labels drawn before it
    (more than `HIDDEN_SHARE` of it covered: a busy photo, boxes in the order given, most important first) is
    left out rather than drawn half hidden, its box still drawn. `colours`: one BGR colour per box (default: one amber for all); `size`: font size in px and
    `width`: line width (default: from the image size). Labels are drawn after all boxes. `polygons`: per box
    None or its rotated box's 4 corners [[x, y], ...] (pixels), drawn instead of the rectangle (`box` its hull).
    """
    boxes = [list(map(float, b)) for b in boxes]
    colours = list(colours) if colours is not None else [DEFAULT_COLOUR] * len(boxes)
    polygons = list(polygons) if polygons is not None else [None] * len(boxes)
    size = size or font_size_for(image.shape)
    width = width or line_width_for(image.shape)
    for box, colour, poly in zip(boxes, colours, polygons):
        if poly is not None:
            pts = [np.round(np.asarray(poly, np.float64)).astype(np.int32).reshape(-1, 1, 2)]
            cv2.polylines(image, pts, True, (0, 0, 0), width + 2, cv2.LINE_AA)
            cv2.polylines(image, pts, True, tuple(int(c) for c in colour), width, cv2.LINE_AA)
            continue
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        cv2.rectangle(image, (x1, y1), (x2, y2), (0, 0, 0), width + 2, cv2.LINE_AA)
        cv2.rectangle(image, (x1, y1), (x2, y2), tuple(int(c) for c in colour), width, cv2.LINE_AA)
    todo = [(box, label_patch(text, size, colour), colour) for box, text, colour in zip(boxes, labels, colours)
            if text]
    spots = place_labels([t[0] for t in todo], [(t[1].shape[1], t[1].shape[0]) for t in todo], image.shape)
    drawn: list[tuple[int, int, int, int]] = []
    kept = []
    for (box, patch, colour), (x, y) in zip(todo, spots):
        x1, y1, x2, y2 = box
        ph, pw = patch.shape[:2]
        rect = (x, y, x + pw, y + ph)
        if sum(_overlap(rect, r) for r in drawn) > HIDDEN_SHARE * pw * ph:
            continue  # no free spot left: this label would cover (or hide under) another; its box stays drawn
        drawn.append(rect)
        kept.append((patch, x, y))
        # a label pushed away from its box gets a thin leader line to the nearest box corner (drawn under
        # every label)
        gap_y = max(y1 - (y + ph), y - y2, 0)
        gap_x = max(x1 - (x + pw), x - x2, 0)
        if gap_y > 2 or gap_x > 2:
            lx, ly = x + pw // 2, (y + ph if y + ph <= y1 else y)
            bx, by = min(max(lx, x1), x2), (y1 if ly <= y1 else y2)
            cv2.line(image, (int(lx), int(ly)), (int(bx), int(by)), tuple(int(c) for c in colour), 1, cv2.LINE_AA)
    for patch, x, y in kept:
        ph, pw = patch.shape[:2]
        cv2.rectangle(image, (x - 1, y - 1), (x + pw, y + ph), (0, 0, 0), 1)
        paste(image, patch, x, y)
