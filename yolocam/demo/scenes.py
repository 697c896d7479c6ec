"""Procedural detection scenes for the bundled demo detectors.

Pure numpy + OpenCV, deterministic by seed. Each scene is a cluttered
background (gradients, stripes, checkers, noise, blurred blobs) with 1-8
labelled filled shapes (``CLASS_NAMES``) and a few unlabelled distractors
(elongated ellipses, stars, rings, thin lines).

Typical use::

    scene = make_scene(7)                 # Scene(image, boxes, classes)
    yaml_path = write_dataset("/tmp/ds", n_train=1000, n_val=100)
"""

from __future__ import annotations

import math
import pathlib
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["CLASS_NAMES", "Scene", "make_scene", "scene_seed", "write_dataset"]

CLASS_NAMES = ("circle", "square", "triangle", "cross")

SIZE_RANGE = (320, 640)  # image side, pixels (inclusive)
SHAPE_RANGE = (16, 128)  # shape bounding extent, pixels (inclusive)
MAX_OBJECTS = 8
MAX_IOU = 0.3  # max box IoU between two labelled shapes
MIN_VISIBLE = 0.6  # min visible fraction of a labelled shape after occlusion
MIN_CONTRAST = 110.0  # min BGR distance between a shape and the mean background under it
_SPLITS = {"train": 0, "val": 1, "test": 2}


@dataclass
class Scene:
    """One generated image with its labels.

    image:   BGR uint8, shape (H, W, 3).
    boxes:   float32, shape (N, 4), xyxy in pixels (x1, y1 exclusive-end x2, y2).
    classes: int64, shape (N,), indices into ``CLASS_NAMES``.
    owner:   int16, shape (H, W): index of the labelled shape seen at each pixel, -1 for none
             (occlusion applied: a shape's visible pixels are ``owner == i``).
    outlines: per shape, its whole outline (K, 2) float32 in pixels (the circle as a 64-gon).
    frames:  float32, shape (N, 5): each shape's own frame as an oriented box cx, cy, w, h (pixels)
             and angle (radians): the rotated box of the unrotated shape (circles: axis-aligned).
    """

    image: np.ndarray
    boxes: np.ndarray
    classes: np.ndarray
    owner: np.ndarray | None = None
    outlines: list | None = None
    frames: np.ndarray | None = None


# --------------------------------------------------------------------------- geometry


def _rot(pts: np.ndarray, angle: float) -> np.ndarray:
    """Rotate (K, 2) points about the origin by ``angle`` radians."""
    c, s = math.cos(angle), math.sin(angle)
    return pts @ np.array([[c, s], [-s, c]], dtype=np.float64)


def _fit(pts: np.ndarray, extent: float) -> np.ndarray:
    """Scale (K, 2) points (centred at their box centre) so the larger box side is ``extent``."""
    lo, hi = pts.min(0), pts.max(0)
    pts = pts - (lo + hi) / 2
    return pts * (extent / max(hi - lo))


def _class_polygon(cls: int, rng: np.random.Generator) -> tuple[np.ndarray | None, np.ndarray | None, float]:
    """(rotated polygon (K, 2), the same polygon unrotated, its rotation in radians) for a labelled
    class; (None, None, 0.0) for the circle."""
    if cls == 0:
        return None, None, 0.0
    if cls == 1:  # square
        pts = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=np.float64)
    elif cls == 2:  # triangle: near-equilateral, apex angle 50-75 degrees
        half = math.radians(rng.uniform(25, 37.5))
        pts = np.array([[0, -1], [math.tan(half) * 2, 1], [-math.tan(half) * 2, 1]], dtype=np.float64)
    else:  # cross: plus sign with arm half-thickness t
        t = rng.uniform(0.2, 0.34)
        pts = np.array(
            [[-t, -1], [t, -1], [t, -t], [1, -t], [1, t], [t, t],
             [t, 1], [-t, 1], [-t, t], [-1, t], [-1, -t], [-t, -t]],
            dtype=np.float64,
        )
    angle = rng.uniform(0, 2 * math.pi)
    return _rot(pts, angle), pts, angle


def _star(rng: np.random.Generator) -> np.ndarray:
    """Star polygon (2k, 2) with 5-7 points and deep notches."""
    k = int(rng.integers(5, 8))
    inner = rng.uniform(0.35, 0.5)
    ang = np.arange(2 * k) * math.pi / k + rng.uniform(0, 2 * math.pi)
    r = np.where(np.arange(2 * k) % 2 == 0, 1.0, inner)
    return np.stack([r * np.cos(ang), r * np.sin(ang)], 1)


# --------------------------------------------------------------------------- rendering


def _draw_mask(h: int, w: int, kind: str, cx: float, cy: float, ext: float,
               poly: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
    """Anti-aliased float32 coverage mask (H, W) in [0, 1] for one shape."""
    m = np.zeros((h, w), np.uint8)
    sh = 4  # sub-pixel bits
    f = 1 << sh
    if kind == "circle":
        cv2.circle(m, (round(cx * f), round(cy * f)), round(ext / 2 * f), 255, -1, cv2.LINE_AA, sh)
    elif kind == "ellipse":
        axes = (round(ext / 2 * f), round(ext / 2 / rng.uniform(2.5, 5.0) * f))
        cv2.ellipse(m, (round(cx * f), round(cy * f)), axes, rng.uniform(0, 180), 0, 360, 255, -1,
                    cv2.LINE_AA, sh)
    elif kind == "ring":
        c, r = (round(cx * f), round(cy * f)), ext / 2
        cv2.circle(m, c, round(r * f), 255, -1, cv2.LINE_AA, sh)
        cv2.circle(m, c, round(r * rng.uniform(0.55, 0.75) * f), 0, -1, cv2.LINE_AA, sh)
    elif kind == "line":
        a = rng.uniform(0, math.pi)
        d = np.array([math.cos(a), math.sin(a)]) * ext * rng.uniform(1.0, 2.5) / 2
        p0, p1 = np.array([cx, cy]) - d, np.array([cx, cy]) + d
        cv2.line(m, tuple(np.round(p0 * f).astype(int)), tuple(np.round(p1 * f).astype(int)), 255,
                 int(rng.integers(1, 4)), cv2.LINE_AA, sh)
    else:
        pts = np.round((_fit(poly, ext) + (cx, cy)) * f).astype(np.int32)
        cv2.fillPoly(m, [pts], 255, cv2.LINE_AA, sh)
    return m.astype(np.float32) / 255.0


def _background(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Cluttered float32 BGR background (H, W, 3) in [0, 255]."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    a = rng.uniform(0, 2 * math.pi)
    t = (xx * math.cos(a) + yy * math.sin(a))
    t = (t - t.min()) / max(float(np.ptp(t)), 1.0)
    img = c0 + (c1 - c0) * t[..., None]
    for _ in range(int(rng.integers(0, 3))):  # textures, blended at moderate strength
        kind = rng.integers(0, 3)
        if kind == 0:  # stripes
            a, period = rng.uniform(0, math.pi), rng.uniform(6, 60)
            tex = (np.sin((xx * math.cos(a) + yy * math.sin(a)) * 2 * math.pi / period) > 0)
        elif kind == 1:  # checker
            cell = rng.uniform(6, 48)
            tex = ((np.floor(xx / cell) + np.floor(yy / cell)) % 2) > 0
        else:  # blocky / smooth value noise
            g = int(rng.integers(4, 24))
            low = rng.uniform(0, 1, (g, g)).astype(np.float32)
            tex = cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC if rng.random() < 0.5 else cv2.INTER_NEAREST)
        col = rng.uniform(0, 255, 3)
        alpha = rng.uniform(0.15, 0.5) * tex.astype(np.float32)[..., None]
        img = img * (1 - alpha) + col * alpha
    blobs = np.zeros_like(img)
    wsum = np.zeros((h, w), np.float32)
    for _ in range(int(rng.integers(0, 7))):  # soft blurred blobs
        m = np.zeros((h, w), np.float32)
        ax = (int(rng.integers(10, max(11, w // 4))), int(rng.integers(10, max(11, h // 4))))
        cv2.ellipse(m, (int(rng.integers(0, w)), int(rng.integers(0, h))), ax, rng.uniform(0, 180), 0, 360, 1.0, -1)
        m = cv2.GaussianBlur(m, (0, 0), rng.uniform(4, 20)) * rng.uniform(0.3, 0.8)
        blobs += m[..., None] * rng.uniform(0, 255, 3)
        wsum += m
    alpha = np.clip(wsum, 0, 1)[..., None]
    img = img * (1 - alpha) + blobs / np.maximum(wsum, 1e-6)[..., None] * alpha
    return img.astype(np.float32)


def _contrast_colour(canvas: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random BGR colour far (>= MIN_CONTRAST) from the mean of ``canvas`` under ``mask``."""
    sel = mask > 0.5
    ref = canvas[sel].mean(0) if sel.any() else canvas.reshape(-1, 3).mean(0)
    best, best_d = None, -1.0
    for _ in range(24):
        col = rng.uniform(0, 255, 3)
        d = float(np.linalg.norm(col - ref))
        if d >= MIN_CONTRAST:
            return col
        if d > best_d:
            best, best_d = col, d
    return np.where(ref > 127, 0.0, 255.0) if best_d < MIN_CONTRAST * 0.7 else best


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two xyxy boxes (4,)."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _mask_box(mask: np.ndarray) -> np.ndarray | None:
    """Tight xyxy box (4,) of pixels with coverage >= 0.5 (x2/y2 exclusive), or None."""
    ys, xs = np.nonzero(mask >= 0.5)
    if len(xs) == 0:
        return None
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


def _outline(cx: float, cy: float, ext: float, poly: np.ndarray | None) -> np.ndarray:
    """A shape's outline (K, 2) in pixels, as drawn by ``_draw_mask`` (circle: a 64-gon)."""
    if poly is None:
        t = np.arange(64) * (2 * math.pi / 64)
        return (np.stack([np.cos(t), np.sin(t)], 1) * ext / 2 + (cx, cy)).astype(np.float32)
    return (_fit(poly, ext) + (cx, cy)).astype(np.float32)


def _frame(cx: float, cy: float, ext: float, poly, canon, angle: float) -> tuple[float, ...]:
    """Oriented box (cx, cy, w, h, angle) of a shape: its unrotated bounding box, rotated and placed
    the way ``_fit`` places the rotated polygon. Circles: the axis-aligned square."""
    if poly is None:
        return (cx, cy, ext, ext, 0.0)
    lo, hi = poly.min(0), poly.max(0)
    scale = ext / max(hi - lo)
    clo, chi = canon.min(0), canon.max(0)
    centre = _rot(((clo + chi) / 2)[None], angle)[0]
    c = (centre - (lo + hi) / 2) * scale + (cx, cy)
    w, h = (chi - clo) * scale
    # _rot maps the unrotated x axis to (cos a, sin a) in image axes, as ultralytics' xywhr angle does
    return (float(c[0]), float(c[1]), float(w), float(h), float(angle % math.pi))


# --------------------------------------------------------------------------- public API


def make_scene(seed: int, size: tuple[int, int] | None = None) -> Scene:
    """Generate one scene deterministically from ``seed``.

    size: optional (H, W) in pixels; default random per seed in [320, 640] per side.
    Returns a :class:`Scene` with 1..8 labelled shapes fully inside the image.
    """
    rng = np.random.default_rng(int(seed))
    if size is None:
        h, w = (int(v) for v in rng.integers(SIZE_RANGE[0], SIZE_RANGE[1] + 1, 2))
    else:
        h, w = int(size[0]), int(size[1])
    canvas = _background(h, w, rng)

    # distractors first, so labelled shapes are never hidden by unlabelled ones
    for _ in range(int(rng.integers(0, 5))):
        kind = ("ellipse", "star", "ring", "line")[int(rng.integers(0, 4))]
        ext = rng.uniform(SHAPE_RANGE[0], SHAPE_RANGE[1])
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        m = _draw_mask(h, w, kind, cx, cy, ext, _star(rng) if kind == "star" else None, rng)
        col = _contrast_colour(canvas, m, rng)
        canvas = canvas * (1 - m[..., None]) + col * m[..., None]

    owner = np.full((h, w), -1, np.int16)  # index of the top-most labelled shape per pixel
    areas: list[int] = []
    boxes: list[np.ndarray] = []
    classes: list[int] = []
    outlines: list[np.ndarray] = []
    frames: list[tuple[float, ...]] = []
    target = int(rng.integers(1, MAX_OBJECTS + 1))
    smax = min(SHAPE_RANGE[1], h - 4, w - 4)
    for _ in range(target * 12):
        if len(boxes) == target:
            break
        cls = int(rng.integers(0, len(CLASS_NAMES)))
        ext = rng.uniform(SHAPE_RANGE[0], smax)
        poly, canon, angle = _class_polygon(cls, rng)
        cx, cy = rng.uniform(ext / 2 + 1, w - ext / 2 - 1), rng.uniform(ext / 2 + 1, h - ext / 2 - 1)
        m = _draw_mask(h, w, "circle" if cls == 0 else "poly", cx, cy, ext, poly, rng)
        box = _mask_box(m)
        if box is None or box[0] < 0 or box[1] < 0 or box[2] > w or box[3] > h:
            continue
        if any(_iou(box, b) >= MAX_IOU for b in boxes):
            continue
        solid = m >= 0.5
        if boxes:
            hidden = np.bincount(owner[solid].astype(np.int64) + 1, minlength=len(boxes) + 1)[1:]
            vis = np.bincount(owner.ravel().astype(np.int64) + 1, minlength=len(boxes) + 1)[1:]
            if np.any((vis - hidden) < MIN_VISIBLE * np.asarray(areas)):
                continue
        col = _contrast_colour(canvas, m, rng)
        canvas = canvas * (1 - m[..., None]) + col * m[..., None]
        owner[solid] = len(boxes)
        outlines.append(_outline(cx, cy, ext, poly))
        frames.append(_frame(cx, cy, ext, poly, canon, angle))
        areas.append(int(solid.sum()))
        boxes.append(box)
        classes.append(cls)

    # sensor-ish finish: mild blur and noise
    if rng.random() < 0.3:
        canvas = cv2.GaussianBlur(canvas, (0, 0), rng.uniform(0.4, 1.0))
    canvas = canvas + rng.normal(0, rng.uniform(0, 8), canvas.shape)
    image = np.clip(np.round(canvas), 0, 255).astype(np.uint8)
    return Scene(image=image, boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
                 classes=np.asarray(classes, np.int64), owner=owner, outlines=outlines,
                 frames=np.asarray(frames, np.float32).reshape(-1, 5))


def scene_seed(seed: int, split: str, index: int) -> int:
    """Per-image seed; distinct for every (seed, split, index) with index < 10**7."""
    if not 0 <= index < 10**7:
        raise ValueError("index must be in [0, 1e7)")
    return (int(seed) * len(_SPLITS) + _SPLITS[split]) * 10**7 + int(index)


def yolo_labels(scene: Scene) -> str:
    """YOLO txt labels ('cls cx cy w h', normalised) for ``scene``."""
    h, w = scene.image.shape[:2]
    lines = []
    for (x1, y1, x2, y2), c in zip(scene.boxes.tolist(), scene.classes.tolist()):
        lines.append(f"{c} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}")
    return "\n".join(lines) + ("\n" if lines else "")


def write_split(out_dir, split: str, n: int, seed: int = 0) -> None:
    """Write ``n`` scenes of ``split`` to ``out_dir/images/<split>`` and ``out_dir/labels/<split>``."""
    out = pathlib.Path(out_dir)
    img_dir, lab_dir = out / "images" / split, out / "labels" / split
    img_dir.mkdir(parents=True, exist_ok=True)
    lab_dir.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        scene = make_scene(scene_seed(seed, split, i))
        name = f"{split}_{seed}_{i:06d}"
        cv2.imwrite(str(img_dir / f"{name}.jpg"), scene.image, [cv2.IMWRITE_JPEG_QUALITY, 95])
        (lab_dir / f"{name}.txt").write_text(yolo_labels(scene))


def write_data_yaml(out_dir, splits=("train", "val")) -> pathlib.Path:
    """Write ``out_dir/data.yaml`` (absolute path, splits, names) and return its path."""
    out = pathlib.Path(out_dir).resolve()
    lines = [f"path: {out}"] + [f"{s}: images/{s}" for s in splits] + ["names:"]
    lines += [f"  {i}: {n}" for i, n in enumerate(CLASS_NAMES)]
    yaml_path = out / "data.yaml"
    yaml_path.write_text("\n".join(lines) + "\n")
    return yaml_path


def write_dataset(out_dir, n_train: int, n_val: int, seed: int = 0) -> pathlib.Path:
    """Write an ultralytics dataset (images/{train,val}, labels/{train,val}, data.yaml).

    Per-image seeds come from :func:`scene_seed`, so train and val never share a scene.
    Returns the absolute path of ``data.yaml``.
    """
    write_split(out_dir, "train", n_train, seed)
    write_split(out_dir, "val", n_val, seed)
    return write_data_yaml(out_dir)
