"""Result objects: one `ImageExplanation` per image, one `DetectionExplanation` per kept box."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..model.segment import InstanceMask, PolygonMask
from .export import OVERLAY_MAX_SIDE, ExportWriter
from .maps import MapRef
from .render import draw_boxes, draw_heat, draw_keypoints


class _HeatmapField:
    """`DetectionExplanation.heatmap`: a stored array, or a `MapRef` resized to full resolution on access.

    The dataclass sees a field without a default (the class-level `__get__` raises AttributeError),
    so the constructor takes the heatmap positionally as before, as an array or a `MapRef`.
    """

    def __set_name__(self, owner, name: str) -> None:
        self.attr = f"_{name}"

    def __get__(self, obj, owner=None):
        if obj is None:
            raise AttributeError("heatmap")  # no class-level default
        value = obj.__dict__[self.attr]
        return value.full() if isinstance(value, MapRef) else value

    def __set__(self, obj, value) -> None:
        obj.__dict__[self.attr] = value


@dataclass
class DetectionExplanation:
    """One detection and its heatmap.

    box: [x1, y1, x2, y2] in original-image pixels (OBB models: the hull of `polygon`); anchor: index on the head's flattened prediction
    axis; level: 0 = finest stride; heatmap: float32 (H, W) of the original image, in [0, 1].

    Maps from `Explainer` and `load_output` are kept compact (at model-input resolution, see
    `output/maps.py`) and `heatmap` resizes them to the original image on each access (nothing is
    cached: iterating over many boxes holds one full-resolution map at a time; keep the array in a
    variable to use it several times, and treat it as read-only). `compact_heatmap` is the map as
    kept, on the letterboxed image without its padding (the same as `heatmap` when that is no larger).
    """

    box: list[float]
    cls: int
    name: str
    conf: float
    anchor: int
    level: int
    heatmap: np.ndarray = _HeatmapField()
    reason: str | None = None  # why the heatmap is zero when the score does not depend on the explained layers
    rbox: list[float] | None = None  # OBB models: [cx, cy, w, h, angle], pixels and radians; `box` is its hull
    polygon: list[list[float]] | None = None  # OBB models: the rotated box's 4 corners [[x, y], ...], pixels
    keypoints: list[list[float]] | None = None  # pose models: K x [x, y, visibility score], original-image pixels
    # segmentation models: the mask, compact (or its outlines, `PolygonMask`, when read back from a manifest)
    instance_mask: InstanceMask | PolygonMask | None = field(default=None, repr=False)
    track_id: int | None = None  # `explain(track=True)` on a video or stream: the tracker's id for this box

    @property
    def mask(self) -> np.ndarray | None:
        """Segmentation models: the instance's mask, bool (H, W) of the original image (made on access), else None."""
        return None if self.instance_mask is None else self.instance_mask.full()

    @property
    def segments(self) -> list[list[list[float]]] | None:
        """Segmentation models: the mask's outlines, one polygon [[x, y], ...] per part, original-image pixels."""
        return None if self.instance_mask is None else self.instance_mask.segments()

    def to_dict(self) -> dict:
        out = {"box": [float(v) for v in self.box], "cls": int(self.cls), "name": self.name,
               "conf": float(self.conf), "anchor": int(self.anchor), "level": int(self.level)}
        if self.rbox is not None:
            out["rbox"] = [float(v) for v in self.rbox]
            out["polygon"] = [[float(x), float(y)] for x, y in self.polygon]
        if self.keypoints is not None:
            out["keypoints"] = [[float(v) for v in row] for row in self.keypoints]
        if self.instance_mask is not None:
            out["segments"] = [[[round(float(x), 2), round(float(y), 2)] for x, y in seg] for seg in self.segments]
        if self.track_id is not None:
            out["track"] = int(self.track_id)
        return out if self.reason is None else {**out, "reason": self.reason}

    @property
    def signed(self) -> bool:
        """True when the map is signed (`Explainer(signed=True)`): values in [-1, 1], negative = lowered the target."""
        ref = self.map_ref
        return bool(ref is not None and ref.stack.signed)

    @property
    def map_ref(self) -> MapRef | None:
        """Where a compact map is kept (None when `heatmap` is a plain array)."""
        value = self.__dict__["_heatmap"]
        return value if isinstance(value, MapRef) else None

    @property
    def compact_heatmap(self) -> np.ndarray:
        """The map as kept: over the letterboxed image without its padding, or `heatmap` itself."""
        value = self.__dict__["_heatmap"]
        return value.stored if isinstance(value, MapRef) else value

    def heatmap_at(self, size: tuple[int, int]) -> np.ndarray:
        """The map resized to (H', W') (bilinear, then scaled to a maximum of 1), without a full-size copy."""
        value = self.__dict__["_heatmap"]
        if isinstance(value, MapRef):
            return value.resized(size)
        heat = np.asarray(value, np.float32)
        if heat.shape == tuple(size):
            return heat
        out = cv2.resize(heat, (size[1], size[0]), interpolation=cv2.INTER_AREA)
        peak = float(out.max()) if out.size else 0.0
        return out / peak if peak > 0 else out


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
    frame: int | None = None  # videos and streams: the frame's number in its source (video files: 0-based position)
    source: str | None = None  # videos and streams: the source as given (`path` is the video or stream read)

    @property
    def ok(self) -> bool:
        return self.error is None

    def save(self, out_dir, html: bool = False, crops: bool = False,
             overlay_max_side: int | None = OVERLAY_MAX_SIDE) -> Path:
        """Write manifest.json, <stem>/heatmaps.npz and one overlay per detection into `out_dir`.

        Overlays of images larger than `overlay_max_side` pixels (long side) are drawn on the image
        scaled down to that size (None: full size); the npz keeps the maps (see `ExportWriter`).
        """
        from .lock import owning

        with owning(out_dir), ExportWriter(out_dir, meta=self.meta, html=html, crops=crops,
                                           overlay_max_side=overlay_max_side) as writer:
            writer.add(self)
        return Path(out_dir)

    def plot(self, index: int | None = None, alpha: float = 0.5) -> np.ndarray:
        """An overlay as a BGR array: detection `index`'s heatmap and box, or all boxes over the max of all maps."""
        if self.image is None:
            raise ValueError(f"no image to plot: {self.error}")
        signed = any(d.signed for d in self.detections)
        if index is None:  # running maximum (signed: of magnitude, sign kept): one full-resolution map at a time
            heat = np.zeros(self.image.shape[:2], np.float32)
            for d in self.detections:
                m = d.heatmap
                if signed:
                    heat = np.where(np.abs(m) > np.abs(heat), m, heat)
                else:
                    np.maximum(heat, m, out=heat)
            dets = self.detections
        else:
            heat, dets = self.detections[index].heatmap, [self.detections[index]]
        if signed:  # diverging colours and a legend (`signed_render.py`)
            from .signed_render import signed_overlay

            out = signed_overlay(self.image, heat, alpha)
        else:
            out = draw_heat(self.image, heat, alpha=alpha)
        draw_boxes(out, dets)  # one colour per class, labels placed so they do not cover each other
        for d in dets:
            draw_keypoints(out, d.keypoints)
        return out
