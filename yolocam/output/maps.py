"""Compact heatmaps: one image's maps kept at model-input resolution, full resolution on demand.

An explanation's maps carry no more detail than the model input (at most `imgsz` on the long
side), but an original photo may have 12 or 36 MP. `MapStack` keeps an image's N maps over the
letterbox content region of the input (the padding cropped off), and produces a full-resolution
map for one detection at a time: the bilinear resize (half-pixel centres, as
`F.interpolate(align_corners=False)`) to the original size, then scaled to a maximum of 1.
Because fusion and resizing are linear and only the final normalisation is not, this equals the
map computed at full resolution directly, up to float rounding.

Memory: N x h x w floats per image (h, w <= imgsz) instead of N x H x W. When the original is no
larger than the content region, the maps are resized once and kept at full resolution.

Classification models see only a centre crop of the image (`inputs/images.py`): their maps cover
that `region` of the original and are exactly zero outside it.

Signed maps (`Explainer(signed=True)`, `cam/signed.py`) are in [-1, 1]: resized the same way, then
scaled by their largest magnitude instead of rectified.
"""

from __future__ import annotations

import cv2
import numpy as np


class MapStack:
    """An image's N maps: (N, h, w) over the letterbox content region, for an original of `size` (H, W).

    `full(k)` is detection k's (H, W) float32 map in [0, 1]. When (h, w) == (H, W) the stored maps
    are the full-resolution ones (float32: `full` returns a view; float16, as read from an old file:
    a float32 copy); else each call computes a fresh array (nothing is cached, so iterating over
    many detections holds one full-resolution map at a time).

    `region` (x0, y0, x1, y1), original pixels: the maps cover only that rectangle (a classification
    model's centre crop); the full map is zero outside it. None: the whole image.
    """

    def __init__(self, maps: np.ndarray, size: tuple[int, int], region=None, signed: bool = False):
        maps = np.ascontiguousarray(maps)  # (a padded input's maps are cut, so keep only the region)
        if maps.ndim != 3:
            raise ValueError(f"MapStack: expected maps of shape (N, h, w), got {maps.shape}")
        self.size = (int(size[0]), int(size[1]))
        self.signed = bool(signed)  # maps in [-1, 1], scaled by the largest magnitude (not rectified)
        region = None if region is None else tuple(int(v) for v in region)
        self.region = None if region in (None, (0, 0, self.size[1], self.size[0])) else region
        n, h, w = maps.shape
        if self.region is None and (h, w) != self.size and h * w >= self.size[0] * self.size[1] and n:
            maps = np.stack([self._resize(m, self.size, self.signed) for m in maps])  # no larger at full resolution
        self.maps = maps

    def __len__(self) -> int:
        return len(self.maps)

    @property
    def compact(self) -> bool:
        """True when the stored maps are smaller than the original image (resized on each access)."""
        return tuple(self.maps.shape[1:]) != self.size or self.region is not None

    def full(self, k: int) -> np.ndarray:
        """Detection k's map at the original image's (H, W), float32 in [0, 1]."""
        if not self.compact:
            m = self.maps[k]
            return m if m.dtype == np.float32 else m.astype(np.float32)
        return self.resized(k, self.size)

    def resized(self, k: int, size: tuple[int, int]) -> np.ndarray:
        """Detection k's map resized to any (H', W') (e.g. an overlay's), float32 in [0, 1]."""
        if tuple(size) == self.size and not self.compact:
            return self.full(k)
        if self.region is None:
            return self._resize(self.maps[k], size, self.signed)
        gx, gy = size[1] / self.size[1], size[0] / self.size[0]
        x0, y0, x1, y1 = (round(v * g) for v, g in zip(self.region, (gx, gy, gx, gy)))
        out = np.zeros(size, np.float32)
        if x1 > x0 and y1 > y0:
            out[y0:y1, x0:x1] = self._resize(self.maps[k], (y1 - y0, x1 - x0), self.signed)
        return out

    @staticmethod
    def _resize(m: np.ndarray, size: tuple[int, int], signed: bool = False) -> np.ndarray:
        m = m.astype(np.float32, copy=False)
        out = m.copy() if m.shape == tuple(size) else cv2.resize(m, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
        if not signed:
            np.maximum(out, 0, out=out)
        peak = (float(np.abs(out).max()) if signed else float(out.max())) if out.size else 0.0
        if peak > 0:
            out /= peak
        return out


class MapRef:
    """Detection k of a `MapStack`: what a `DetectionExplanation` holds instead of a full map."""

    __slots__ = ("stack", "index")

    def __init__(self, stack: MapStack, index: int):
        self.stack, self.index = stack, int(index)

    def __getstate__(self):
        return self.stack, self.index

    def __setstate__(self, state) -> None:
        self.stack, self.index = state

    def full(self) -> np.ndarray:
        return self.stack.full(self.index)

    def resized(self, size: tuple[int, int]) -> np.ndarray:
        return self.stack.resized(self.index, size)

    @property
    def stored(self) -> np.ndarray:
        """The map as stored: (h, w) over the letterbox content region, or (H, W) when that is no larger."""
        return self.stack.maps[self.index]
