"""Result objects: one `ImageExplanation` per image, one `DetectionExplanation` per kept box."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .export import ExportWriter
from .render import blend_heatmap, draw_box


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
    reason: str | None = None  # why the heatmap is zero when the score does not depend on the explained layers

    def to_dict(self) -> dict:
        out = {"box": [float(v) for v in self.box], "cls": int(self.cls), "name": self.name,
               "conf": float(self.conf), "anchor": int(self.anchor), "level": int(self.level)}
        return out if self.reason is None else {**out, "reason": self.reason}


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
