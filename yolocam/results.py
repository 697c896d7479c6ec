"""Result objects: one `ImageExplanation` per image, one `DetectionExplanation` per kept box."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np


@dataclass
class DetectionExplanation:
    """One detection and its heatmap.

    box: [x1, y1, x2, y2] in original-image pixels; anchor: index on the head's flattened prediction
    axis; level: 0 = finest stride; heatmap: float32 (H, W) of the original image, in [0, 1].
    """

    box: list[float]
    cls: int
    name: str
    conf: float
    anchor: int
    level: int
    heatmap: np.ndarray

    def to_dict(self) -> dict:
        return {"box": [float(v) for v in self.box], "cls": int(self.cls), "name": self.name,
                "conf": float(self.conf), "anchor": int(self.anchor), "level": int(self.level)}


@dataclass
class ImageExplanation:
    """One image: its path (None for arrays), BGR image, detections (highest confidence first).

    `error` is set (and `image` None) when the input could not be used; `meta` names the model,
    method, target and layers that produced the maps.
    """

    path: str | None
    image: np.ndarray | None
    detections: list[DetectionExplanation] = field(default_factory=list)
    error: str | None = None
    meta: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None

    def save(self, out_dir, html: bool = False, crops: bool = False) -> Path:
        """Write manifest.json, <stem>/heatmaps.npz and one overlay per detection into `out_dir`."""
        from .export import ExportWriter

        with ExportWriter(out_dir, meta=self.meta, html=html, crops=crops) as writer:
            writer.add(self)
        return Path(out_dir)

    def plot(self, index: int | None = None, alpha: float = 0.5) -> np.ndarray:
        """An overlay as a BGR array: detection `index`'s heatmap and box, or all boxes over the max of all maps."""
        if self.image is None:
            raise ValueError(f"no image to plot: {self.error}")
        if index is None:
            heat = (np.max([d.heatmap for d in self.detections], axis=0) if self.detections
                    else np.zeros(self.image.shape[:2], np.float32))
            dets = self.detections
        else:
            heat, dets = self.detections[index].heatmap, [self.detections[index]]
        out = blend_heatmap(self.image, heat, alpha)
        for d in dets:
            draw_box(out, d.box, f"{d.name} {d.conf:.2f}")
        return out


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
