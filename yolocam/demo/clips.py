"""A generated video for `yolocam demo --video`: shapes of the four demo classes moving, rotating and
passing in front of each other over a cluttered background (deterministic by seed)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .scenes import _background, _class_polygon, _contrast_colour, _draw_mask, _mask_box, _rot

CLIP_SIZE = (320, 320)  # (H, W)
CLIP_FRAMES = 48
CLIP_FPS = 12.0


@dataclass
class MovingShape:
    """One shape's path: class, size, start and end centre (fractions of the frame), start angle and turn per
    frame (radians), and its colour (BGR)."""

    cls: int
    extent: float
    start: tuple[float, float]
    end: tuple[float, float]
    angle: float
    turn: float
    colour: np.ndarray | None = None


def clip_shapes(rng: np.random.Generator) -> list[MovingShape]:
    """Four shapes: a square and a circle crossing (the circle passes in front), a triangle drifting down, a
    cross spinning in place; sizes, angles and speeds jittered by `rng`."""
    j = lambda s: float(rng.uniform(-s, s))  # noqa: E731 - a small jitter
    return [
        MovingShape(1, 70 + j(6), (0.18, 0.33 + j(0.03)), (0.80, 0.36 + j(0.03)), j(1.0), 0.06 + j(0.02)),
        MovingShape(0, 62 + j(6), (0.82, 0.40 + j(0.03)), (0.20, 0.37 + j(0.03)), 0.0, 0.0),
        MovingShape(2, 66 + j(6), (0.25, 0.62), (0.38, 0.80), j(1.0), -0.05 + j(0.02)),
        MovingShape(3, 58 + j(6), (0.74, 0.76), (0.72, 0.74), j(1.0), 0.08 + j(0.02)),
    ]


def _placed(shapes, polygons, k: int, frames: int, h: int, w: int):
    """Each shape's (centre x, centre y, rotated outline or None for the circle) at frame `k`."""
    t = k / max(frames - 1, 1)
    for shape, canon in zip(shapes, polygons):
        cx = (shape.start[0] + (shape.end[0] - shape.start[0]) * t) * w
        cy = (shape.start[1] + (shape.end[1] - shape.start[1]) * t) * h
        yield shape, cx, cy, None if canon is None else _rot(canon, shape.angle + shape.turn * k)


def _setup(seed: int, size):
    rng = np.random.default_rng(int(seed))
    h, w = int(size[0]), int(size[1])
    background = _background(h, w, rng)
    shapes = clip_shapes(rng)
    return rng, h, w, background, shapes, [_class_polygon(s.cls, rng)[1] for s in shapes]


def make_clip(seed: int = 0, frames: int = CLIP_FRAMES, size: tuple[int, int] = CLIP_SIZE) -> list[np.ndarray]:
    """`frames` BGR uint8 frames (H, W, 3) of moving shapes; shapes later in `clip_shapes` are drawn on top."""
    rng, h, w, background, shapes, polygons = _setup(seed, size)
    out = []
    for k in range(int(frames)):
        canvas = background.copy()
        for shape, cx, cy, poly in _placed(shapes, polygons, k, frames, h, w):
            mask = _draw_mask(h, w, "circle" if poly is None else "poly", cx, cy, shape.extent, poly, rng)
            if shape.colour is None:
                shape.colour = _contrast_colour(canvas, mask, rng)
            canvas = canvas * (1 - mask[..., None]) + shape.colour * mask[..., None]
        canvas = canvas + rng.normal(0, 3.0, canvas.shape)  # sensor noise, new every frame
        out.append(np.clip(np.round(canvas), 0, 255).astype(np.uint8))
    return out


def clip_boxes(seed: int = 0, frames: int = CLIP_FRAMES, size: tuple[int, int] = CLIP_SIZE) -> list[np.ndarray]:
    """Per frame the shapes' xyxy boxes (N, 4) and classes (N,) as drawn (before occlusion)."""
    rng, h, w, _, shapes, polygons = _setup(seed, size)
    out = []
    for k in range(int(frames)):
        placed = list(_placed(shapes, polygons, k, frames, h, w))
        boxes = [_mask_box(_draw_mask(h, w, "circle" if poly is None else "poly", cx, cy, shape.extent, poly, rng))
                 for shape, cx, cy, poly in placed]
        out.append((np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray([s.cls for s in shapes], np.int64)))
    return out
