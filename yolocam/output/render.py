"""Drawing: heatmap overlays, boxes with labels, and the per-image summary grid (BGR uint8 arrays)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

from ..errors import YolocamError

if TYPE_CHECKING:
    from .results import ImageExplanation


def blend_heatmap(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """JET-coloured heatmap (H, W) in [0, 1] blended over a BGR image."""
    colour = cv2.applyColorMap(np.clip(heatmap * 255.0, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)
    return cv2.addWeighted(image, 1.0 - alpha, colour, alpha, 0.0)


def draw_box(image: np.ndarray, box, label: str, colour=(255, 255, 255)) -> None:
    """Draw an xyxy box and its label in place (OpenCV's built-in font: nothing to download)."""
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    thick = max(1, round(max(image.shape[:2]) / 400))
    cv2.rectangle(image, (x1, y1), (x2, y2), (0, 0, 0), thick + 2)
    cv2.rectangle(image, (x1, y1), (x2, y2), colour, thick)
    scale = 0.4 * thick
    (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    ty = y1 - 4 if y1 - th - 6 > 0 else y1 + th + 4
    cv2.rectangle(image, (x1, ty - th - 2), (x1 + tw + 2, ty + base - 1), (0, 0, 0), -1)
    cv2.putText(image, label, (x1 + 1, ty), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 1, cv2.LINE_AA)


def summary_grid(result: ImageExplanation, tile: int = 320, max_tiles: int = 48) -> np.ndarray:
    """One BGR picture: the image with all boxes, then each detection's heatmap overlay, in a grid.

    Each tile is `tile` x (`tile` + caption) pixels; at most `max_tiles` tiles (highest confidence first).
    """
    if result.image is None:
        raise YolocamError(f"summary_grid: expected an explained image, got an error result ({result.error})")
    dets = result.detections[: max(max_tiles - 1, 0)]
    shown = f" (showing {len(dets)})" if len(dets) < len(result.detections) else ""
    tiles = [_tile(result.image, None, result.detections, tile, f"{len(result.detections)} detections{shown}")]
    for k, d in enumerate(dets):
        overlay = blend_heatmap(result.image, d.heatmap)
        tiles.append(_tile(overlay, k, [d], tile, f"#{k} {d.name} {d.conf:.2f}"))
    cols = int(np.ceil(np.sqrt(len(tiles))))
    rows = int(np.ceil(len(tiles) / cols))
    th, tw = tiles[0].shape[:2]
    grid = np.full((rows * th, cols * tw, 3), 40, np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        grid[r * th:(r + 1) * th, c * tw:(c + 1) * tw] = t
    return grid


def _tile(image: np.ndarray, index: int | None, dets, size: int, caption: str) -> np.ndarray:
    """`image` fitted into a size x size square (boxes of `dets` drawn at that scale) above a caption strip."""
    h, w = image.shape[:2]
    gain = size / max(h, w)
    nw, nh = max(int(round(w * gain)), 1), max(int(round(h * gain)), 1)
    small = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA)
    for k, d in enumerate(dets):
        label = d.name if index is not None else f"{k} {d.name}"
        draw_box(small, [v * gain for v in d.box], label)
    cap = 22
    out = np.full((size + cap, size, 3), 40, np.uint8)
    top, left = (size - nh) // 2, (size - nw) // 2
    out[top:top + nh, left:left + nw] = small
    cv2.putText(out, caption, (4, size + cap - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    cv2.rectangle(out, (0, 0), (size - 1, size + cap - 1), (90, 90, 90), 1)
    return out
