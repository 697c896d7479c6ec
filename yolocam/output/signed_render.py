"""Drawing signed maps (`Explainer(signed=True)`): a diverging colour map and its legend (BGR uint8).

Positive values (what raised the target) are drawn in red, negative ones (what lowered it) in blue,
each pixel's opacity rising with its magnitude (zero below `floor`), so the scene stays visible where
the map says little. A legend (a blue-grey-red bar labelled "lowers" / "raises") sits in a corner.
Unsigned maps keep `render.blend_heatmap`.
"""

from __future__ import annotations

import numpy as np

from .labels import DEFAULT_COLOUR, draw_labelled_boxes, font_size_for, label_patch, paste
from .render import HEAT_ALPHA, HEAT_FLOOR, zoomed_region

NEGATIVE = np.float32([200, 90, 20])   # BGR: strong blue, what lowered the target
POSITIVE = np.float32([30, 30, 220])   # BGR: strong red, what raised it
NEUTRAL = np.float32([235, 235, 235])  # BGR: the legend's middle


def diverging_luts(alpha: float = HEAT_ALPHA, floor: float = HEAT_FLOOR, gamma: float = 0.7):
    """(colour (511, 3) float32 BGR, opacity (511,) float32) for values -1..1 quantised to 0..510 (255 = 0)."""
    v = np.arange(-255, 256, dtype=np.float32) / 255.0
    t = np.clip((np.abs(v) - floor) / max(1.0 - floor, 1e-6), 0.0, 1.0)
    opacity = alpha * t ** gamma
    mix = (0.35 + 0.65 * t)[:, None]  # from a pale to a saturated hue as the magnitude grows
    end = np.where(v[:, None] < 0, NEGATIVE, POSITIVE)
    colour = NEUTRAL * (1 - mix) + end * mix
    return colour.astype(np.float32), opacity.astype(np.float32)


_LUTS: dict = {}


def blend_signed(image: np.ndarray, heatmap: np.ndarray, alpha: float = HEAT_ALPHA,
                 floor: float = HEAT_FLOOR) -> np.ndarray:
    """A signed `heatmap` (H, W) in [-1, 1] drawn over the BGR `image` (diverging colours); a new uint8 array."""
    key = (round(float(alpha), 4), round(float(floor), 4))
    if key not in _LUTS:
        _LUTS[key] = diverging_luts(*key)
    colours, opacity = _LUTS[key]
    out = image.copy()
    q = np.clip(np.round(np.nan_to_num(heatmap, nan=0.0) * 255.0) + 255, 0, 510).astype(np.int16)
    hot = opacity[q] > 0
    if not hot.any():
        return out
    base = out[hot].astype(np.float32)
    a = opacity[q[hot]][:, None]
    out[hot] = np.clip(base + (colours[q[hot]] - base) * a + 0.5, 0, 255).astype(np.uint8)
    return out


def draw_signed_legend(image: np.ndarray) -> None:
    """Draw the diverging colour bar (-1 "lowers", +1 "raises") in the image's bottom-right corner, in place."""
    h, w = image.shape[:2]
    size = font_size_for(image.shape, 0.022, 10, 28)
    left, right = label_patch("lowers", size, (32, 32, 32)), label_patch("raises", size, (32, 32, 32))
    bar_w, bar_h = max(40, w // 8), left.shape[0]
    colours, _ = diverging_luts(1.0, 0.0)
    ramp = colours[np.linspace(0, 510, bar_w).round().astype(int)]
    bar = np.broadcast_to(ramp[None], (bar_h, bar_w, 3)).astype(np.uint8)
    strip = np.concatenate([left, bar, right], axis=1)
    pad = max(2, size // 4)
    paste(image, strip, w - strip.shape[1] - pad, h - strip.shape[0] - pad)


def signed_overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = HEAT_ALPHA) -> np.ndarray:
    """`blend_signed` plus the legend: what an overlay of a signed map looks like."""
    out = blend_signed(image, heatmap, alpha)
    draw_signed_legend(out)
    return out


def signed_box_crop(image: np.ndarray, heatmap: np.ndarray, box, label: str | None = None, size: int = 256,
                    context: float = 0.6, colour=DEFAULT_COLOUR, alpha: float = HEAT_ALPHA) -> np.ndarray:
    """`render.box_crop` for a signed map: the box plus context, zoomed, in diverging colours with the legend."""
    img, heat, gain, (rx1, ry1) = zoomed_region(image, heatmap, box, size, context)
    out = blend_signed(img, heat, alpha)
    local = [(box[0] - rx1) * gain, (box[1] - ry1) * gain, (box[2] - rx1) * gain, (box[3] - ry1) * gain]
    draw_labelled_boxes(out, [local], [label or ""], [colour], size=font_size_for(out.shape, 0.06, 11, 20),
                        width=max(2, size // 128))
    draw_signed_legend(out)
    return out
