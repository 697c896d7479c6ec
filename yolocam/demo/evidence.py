"""Evidence scenes: the class of an object is decided by a small mark on it, not by its outline.

Pure numpy + OpenCV, deterministic by seed. A 640 x 640 scene is a smooth two-colour gradient with
mild noise. Every object is an axis-aligned filled square *tile* (side 56-128 px, one colour)
carrying one *mark* centred on one of the tile's four quadrant centres (side/4 from the tile's
centre on both axes). The mark's diameter is 0.3 x side (at least 14 px) and its colour differs
from the tile's by at least 80/255 in luminance (BT.601, Y = 0.299 R + 0.587 G + 0.114 B). Classes
(``EVIDENCE_CLASSES``, in this order): ``dot`` (filled disc), ``ring`` (circle outline, thickness
diameter/6), ``plus`` ('+' spanning the diameter, arm thickness diameter/5).

Every scene also holds unlabelled distractors: plain tiles without a mark, and lone marks
(diameter 17-40 px) on the background. Neither a tile nor a mark alone is an object. No two items
(tiles, lone marks) overlap, so a lone mark never lands on a tile.

Ground truth per object: its box (the tile), class, and its mark (centre, diameter, mask), the
evidence that decides the class. Counterfactuals for tests of a trained detector: ``edits={i:
None}`` erases object i's mark (the tile stays, unlabelled), ``edits={i: cls}`` draws another
class's mark in its place; everything else, noise included, is pixel-identical.

Typical use::

    s = make_evidence_scene(7)            # EvidenceScene(image, boxes, classes, mark_centres, ...)
    yaml_path = write_evidence_dataset("/tmp/marks", n_train=1000, n_val=100)
    labels = load_evidence_labels("/tmp/marks/marks/val/val_0_000000.npz")
"""

from __future__ import annotations

import math
import pathlib
from dataclasses import dataclass, field

import cv2
import numpy as np

from .scenes import scene_seed

__all__ = ["EVIDENCE_CLASSES", "EvidenceScene", "make_evidence_scene", "luminance", "mark_mask",
           "write_evidence_dataset", "load_evidence_labels"]

EVIDENCE_CLASSES = ("dot", "ring", "plus")
SCENE_SIZE = (640, 640)  # (H, W)
TILE_RANGE = (56, 128)  # tile side, pixels (inclusive)
MARK_RATIO = 0.3  # mark diameter / tile side
MIN_MARK = 14.0  # smallest mark diameter, pixels
LONE_MARK_RANGE = (17.0, 40.0)  # diameter of the lone (unlabelled) marks on the background
MIN_LUMA_DIFF = 80.0  # mark vs tile (and lone mark vs background), luminance out of 255
RING_THICKNESS = 1 / 6  # x diameter
PLUS_THICKNESS = 1 / 5  # x diameter
MAX_OBJECTS = 6
GAP = 6  # min gap between any two items, pixels


@dataclass
class Mark:
    cls: int  # index into EVIDENCE_CLASSES
    cx: float
    cy: float
    diameter: float
    colour: np.ndarray  # BGR float (3,)


@dataclass
class Tile:
    x0: int
    y0: int
    side: int
    colour: np.ndarray  # BGR float (3,)
    mark: Mark | None  # None: a plain (distractor) tile

    @property
    def box(self) -> np.ndarray:
        return np.array([self.x0, self.y0, self.x0 + self.side, self.y0 + self.side], np.float32)


@dataclass
class EvidenceScene:
    """One evidence scene with its labels (N labelled objects).

    image: BGR uint8 (H, W, 3). boxes: float32 (N, 4) xyxy, the tiles (x2/y2 exclusive ends).
    classes: int64 (N,) into ``EVIDENCE_CLASSES``. mark_centres: float32 (N, 2) (x, y) in pixels
    (pixel (row i, column j) has its centre at (j + 0.5, i + 0.5)). mark_diameters: float32 (N,).
    mark_masks: bool (N, H, W), the pixels the mark covers by more than half.
    tiles / marks: the labelled tiles, then the plain ones; the lone marks (the full layout).
    """

    image: np.ndarray
    boxes: np.ndarray
    classes: np.ndarray
    mark_centres: np.ndarray
    mark_diameters: np.ndarray
    mark_masks: np.ndarray
    tiles: list[Tile] = field(default_factory=list)
    lone_marks: list[Mark] = field(default_factory=list)

    @property
    def plain_boxes(self) -> np.ndarray:
        """(K, 4) boxes of the unlabelled tiles (plain, or whose mark was erased)."""
        return np.asarray([t.box for t in self.tiles if t.mark is None], np.float32).reshape(-1, 4)


def luminance(bgr) -> np.ndarray:
    """BT.601 luma of BGR colour(s) (..., 3) in [0, 255]."""
    c = np.asarray(bgr, np.float64)
    return 0.114 * c[..., 0] + 0.587 * c[..., 1] + 0.299 * c[..., 2]


# --------------------------------------------------------------------------- rendering
_SUB = 8  # coverage is measured on _SUB x _SUB sample points per pixel


def mark_coverage(shape: tuple[int, int], cls: int, cx: float, cy: float, diameter: float) -> np.ndarray:
    """Anti-aliased float32 coverage (H, W) in [0, 1] of a ``cls`` mark centred at (cx, cy).

    Exact geometry, sampled 8 x 8 per pixel: dot = disc of radius r = diameter / 2; ring = the
    annulus r - diameter/6 < distance <= r; plus = two bars 2r long and diameter/5 thick."""
    h, w = shape
    r = diameter / 2
    out = np.zeros((h, w), np.float32)
    x0, x1 = max(0, int(math.floor(cx - r)) - 1), min(w, int(math.ceil(cx + r)) + 1)
    y0, y1 = max(0, int(math.floor(cy - r)) - 1), min(h, int(math.ceil(cy + r)) + 1)
    if x1 <= x0 or y1 <= y0:
        return out
    off = (np.arange(_SUB) + 0.5) / _SUB
    dx = (np.arange(x0, x1)[:, None] + off[None]).reshape(-1) - cx  # sample x per column, (W' * SUB,)
    dy = (np.arange(y0, y1)[:, None] + off[None]).reshape(-1) - cy
    DX, DY = np.meshgrid(dx, dy)
    if cls in (0, 1):
        dist = np.hypot(DX, DY)
        inside = dist <= r
        if cls == 1:
            inside &= dist > r - diameter * RING_THICKNESS
    else:
        t = diameter * PLUS_THICKNESS / 2
        ax, ay = np.abs(DX), np.abs(DY)
        inside = ((ax <= r) & (ay <= t)) | ((ax <= t) & (ay <= r))
    cov = inside.reshape(y1 - y0, _SUB, x1 - x0, _SUB).mean((1, 3))
    out[y0:y1, x0:x1] = cov
    return out


def mark_mask(shape: tuple[int, int], cls: int, cx: float, cy: float, diameter: float) -> np.ndarray:
    """bool (H, W): the pixels a ``cls`` mark covers by more than half."""
    return mark_coverage(shape, cls, cx, cy, diameter) > 0.5


def _background(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    a = rng.uniform(0, 2 * math.pi)
    t = xx * math.cos(a) + yy * math.sin(a)
    t = (t - t.min()) / max(float(np.ptp(t)), 1.0)
    return (c0 + (c1 - c0) * t[..., None]).astype(np.float32)


def _colour_far(ref: np.ndarray, rng: np.random.Generator, min_luma: float = 0.0, min_dist: float = 0.0):
    """A random BGR colour with |luma - luma(ref)| >= min_luma and BGR distance >= min_dist."""
    y_ref = float(luminance(ref))
    for _ in range(64):
        col = rng.uniform(0, 255, 3)
        if abs(float(luminance(col)) - y_ref) >= min_luma and np.linalg.norm(col - ref) >= min_dist:
            return col
    # fall back: push a random colour towards black or white until the luma gap holds
    col = rng.uniform(0, 255, 3)
    target = 0.0 if y_ref > 127.5 else 255.0
    for k in np.linspace(0, 1, 33):
        c = col + (target - col) * k
        if abs(float(luminance(c)) - y_ref) >= min_luma and np.linalg.norm(c - ref) >= min_dist:
            return c
    return np.full(3, target)


def _free(rect, taken) -> bool:
    x0, y0, x1, y1 = rect
    return all(x0 >= b[2] + GAP or x1 + GAP <= b[0] or y0 >= b[3] + GAP or y1 + GAP <= b[1] for b in taken)


# --------------------------------------------------------------------------- layout


def _layout(h: int, w: int, rng: np.random.Generator):
    """Draw every random choice of a scene: (background, tiles (labelled first), lone marks, noise)."""
    bg = _background(h, w, rng)
    taken: list[tuple[float, float, float, float]] = []
    tiles: list[Tile] = []
    n_obj, n_plain, n_lone = int(rng.integers(1, MAX_OBJECTS + 1)), int(rng.integers(1, 4)), int(rng.integers(1, 6))
    smax = min(TILE_RANGE[1], h - 2 * GAP, w - 2 * GAP)
    for k in range(n_obj + n_plain):
        labelled = k < n_obj
        for _ in range(200):
            side = int(rng.integers(TILE_RANGE[0], smax + 1))
            x0, y0 = int(rng.integers(GAP, w - side - GAP + 1)), int(rng.integers(GAP, h - side - GAP + 1))
            if _free((x0, y0, x0 + side, y0 + side), taken):
                break
        else:
            continue
        ref = bg[y0:y0 + side, x0:x0 + side].reshape(-1, 3).mean(0)
        colour = _colour_far(ref, rng, min_luma=30.0, min_dist=80.0)
        mark = None
        if labelled:
            cls = int(rng.integers(0, len(EVIDENCE_CLASSES)))
            sx, sy = (1 if rng.random() < 0.5 else -1), (1 if rng.random() < 0.5 else -1)
            d = max(MARK_RATIO * side, MIN_MARK)
            mark = Mark(cls, x0 + side / 2 + sx * side / 4, y0 + side / 2 + sy * side / 4, d,
                        _colour_far(colour, rng, min_luma=MIN_LUMA_DIFF))
        taken.append((x0, y0, x0 + side, y0 + side))
        tiles.append(Tile(x0, y0, side, colour, mark))
    lone: list[Mark] = []
    for _ in range(n_lone):
        for _ in range(200):
            d = float(rng.uniform(*LONE_MARK_RANGE))
            cx, cy = float(rng.uniform(GAP + d / 2, w - GAP - d / 2)), float(rng.uniform(GAP + d / 2, h - GAP - d / 2))
            rect = (cx - d / 2, cy - d / 2, cx + d / 2, cy + d / 2)
            if _free(rect, taken):
                break
        else:
            continue
        cls = int(rng.integers(0, len(EVIDENCE_CLASSES)))
        ref = bg[int(rect[1]):int(math.ceil(rect[3])), int(rect[0]):int(math.ceil(rect[2]))].reshape(-1, 3).mean(0)
        taken.append(rect)
        lone.append(Mark(cls, cx, cy, d, _colour_far(ref, rng, min_luma=MIN_LUMA_DIFF)))
    noise_sigma, noise_seed = float(rng.uniform(1.0, 4.0)), int(rng.integers(0, 2**31))
    return bg, tiles, lone, noise_sigma, noise_seed


def make_evidence_scene(seed: int, size: tuple[int, int] = SCENE_SIZE, edits: dict | None = None) -> EvidenceScene:
    """Generate one evidence scene deterministically from ``seed``.

    size: (H, W) in pixels (default 640 x 640; at least 160 per side).
    edits: {object index: None (erase its mark) | class index (draw that class's mark instead)}; the
        rest of the scene is identical pixel for pixel. An erased object is no longer labelled.
    """
    h, w = int(size[0]), int(size[1])
    if min(h, w) < 160:
        raise ValueError(f"size: expected at least 160 x 160, got {h} x {w}")
    rng = np.random.default_rng(int(seed))
    canvas, tiles, lone, sigma, noise_seed = _layout(h, w, rng)
    labelled = [t for t in tiles if t.mark is not None]
    for i, new in (edits or {}).items():
        if not 0 <= int(i) < len(labelled):
            raise IndexError(f"edits: object {i} not in this scene ({len(labelled)} objects)")
        t = labelled[int(i)]
        t.mark = None if new is None else Mark(int(new), t.mark.cx, t.mark.cy, t.mark.diameter, t.mark.colour)
    masks, marks = [], []
    for t in tiles:
        canvas[t.y0:t.y0 + t.side, t.x0:t.x0 + t.side] = t.colour
        if t.mark is not None:
            marks.append(t.mark)
    for k, m in enumerate(marks + lone):
        cov = mark_coverage((h, w), m.cls, m.cx, m.cy, m.diameter)
        r = m.diameter / 2 + 2
        ys = slice(max(0, int(m.cy - r)), min(h, int(m.cy + r) + 1))
        xs = slice(max(0, int(m.cx - r)), min(w, int(m.cx + r) + 1))
        a = cov[ys, xs, None]
        canvas[ys, xs] = canvas[ys, xs] * (1 - a) + m.colour * a
        if k < len(marks):
            masks.append(cov > 0.5)
    canvas = canvas + np.random.default_rng(noise_seed).normal(0, sigma, canvas.shape).astype(np.float32)
    image = np.clip(np.round(canvas), 0, 255).astype(np.uint8)
    objects = [t for t in tiles if t.mark is not None]
    return EvidenceScene(
        image=image,
        boxes=np.asarray([t.box for t in objects], np.float32).reshape(-1, 4),
        classes=np.asarray([t.mark.cls for t in objects], np.int64),
        mark_centres=np.asarray([(t.mark.cx, t.mark.cy) for t in objects], np.float32).reshape(-1, 2),
        mark_diameters=np.asarray([t.mark.diameter for t in objects], np.float32),
        mark_masks=np.asarray(masks, bool).reshape(-1, h, w),
        tiles=tiles, lone_marks=lone)


# --------------------------------------------------------------------------- dataset files


def yolo_labels(scene: EvidenceScene) -> str:
    """YOLO txt labels ('cls cx cy w h', normalised) for ``scene``."""
    h, w = scene.image.shape[:2]
    return "".join(f"{c} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}\n"
                   for (x1, y1, x2, y2), c in zip(scene.boxes.tolist(), scene.classes.tolist()))


def save_evidence_labels(path, scene: EvidenceScene) -> None:
    """Write the scene's ground truth (boxes, classes, mark centres/diameters, packed mark masks) as .npz."""
    h, w = scene.image.shape[:2]
    np.savez_compressed(path, boxes=scene.boxes, classes=scene.classes, mark_centres=scene.mark_centres,
                        mark_diameters=scene.mark_diameters, shape=np.array([h, w], np.int64),
                        mark_masks=np.packbits(scene.mark_masks.reshape(len(scene.boxes), -1), axis=1))


def load_evidence_labels(path) -> dict:
    """Read a file of :func:`save_evidence_labels`: boxes, classes, mark_centres, mark_diameters, mark_masks."""
    with np.load(path) as z:
        h, w = (int(v) for v in z["shape"])
        n = len(z["boxes"])
        masks = np.unpackbits(z["mark_masks"], axis=1, count=h * w).astype(bool).reshape(n, h, w)
        return {"boxes": z["boxes"], "classes": z["classes"], "mark_centres": z["mark_centres"],
                "mark_diameters": z["mark_diameters"], "mark_masks": masks}


def write_evidence_split(out_dir, split: str, n: int, seed: int = 0, start: int = 0) -> None:
    """Write scenes ``start``..``n-1`` of ``split``: images/<split>/*.jpg, labels/<split>/*.txt (YOLO)
    and marks/<split>/*.npz (the mark annotations, :func:`load_evidence_labels`)."""
    out = pathlib.Path(out_dir)
    dirs = [out / k / split for k in ("images", "labels", "marks")]
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
    for i in range(start, n):
        scene = make_evidence_scene(scene_seed(seed, split, i))
        name = f"{split}_{seed}_{i:06d}"
        cv2.imwrite(str(dirs[0] / f"{name}.jpg"), scene.image, [cv2.IMWRITE_JPEG_QUALITY, 95])
        (dirs[1] / f"{name}.txt").write_text(yolo_labels(scene))
        save_evidence_labels(dirs[2] / f"{name}.npz", scene)


def write_evidence_yaml(out_dir, splits=("train", "val")) -> pathlib.Path:
    """Write ``out_dir/data.yaml`` (absolute path, splits, the three class names); return its path."""
    out = pathlib.Path(out_dir).resolve()
    lines = [f"path: {out}"] + [f"{s}: images/{s}" for s in splits] + ["names:"]
    lines += [f"  {i}: {n}" for i, n in enumerate(EVIDENCE_CLASSES)]
    (out / "data.yaml").write_text("\n".join(lines) + "\n")
    return out / "data.yaml"


def write_evidence_dataset(out_dir, n_train: int, n_val: int, seed: int = 0) -> pathlib.Path:
    """An ultralytics dataset of evidence scenes (train/val; seeds from ``scenes.scene_seed``, so the
    splits never share a scene), with the mark annotations beside the labels. Returns data.yaml's path."""
    write_evidence_split(out_dir, "train", n_train, seed)
    write_evidence_split(out_dir, "val", n_val, seed)
    return write_evidence_yaml(out_dir)
