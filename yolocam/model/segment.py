"""Instance segmentation (heads `Segment`, `Segment26`): mask coefficients, prototypes, masks, polygons.

Everything follows ultralytics' own segmentation path, calling its functions where it has them:
- each anchor has `nm` mask coefficients (the branch `cv4`, or `one2one_cv4` for end-to-end heads);
  the prototypes (nm, h, w) come from `head.proto`, at 1/4 of the input size: from the finest level
  for `Segment`, from all levels for `Segment26`;
- an instance's mask logits are its coefficients times the prototypes; its mask is ultralytics'
  `process_mask(..., upsample=True)`: logits upsampled (bilinear) to the input, > 0, cropped to its box;
- in the original image: the mask resized by `scale_masks` (as `Results.masks` is drawn) and its
  polygons by `masks2segments` + `scale_coords`, as `Results.masks.xy`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

SEGMENT_HEADS = ("Segment", "Segment26")


def is_segment(head: nn.Module) -> bool:
    """Whether `head` is an instance-segmentation head."""
    return type(head).__name__ in SEGMENT_HEADS


def mask_outputs(head: nn.Module, feats: list[torch.Tensor], end2end: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask coefficients (B, A, nm) of every anchor and the prototypes (B, nm, h, w) from the head inputs."""
    branch = head.one2one_cv4 if end2end else head.cv4
    coeffs = torch.cat([branch[i](f).flatten(2) for i, f in enumerate(feats)], dim=-1).transpose(1, 2)
    if type(head).__name__ == "Segment26":
        protos = head.proto(feats, return_semantic=False)
    else:
        protos = head.proto(feats[0])
    return coeffs, protos


def mask_logit_mean(coeffs: torch.Tensor, protos: torch.Tensor, boxes: torch.Tensor, scale: float) -> torch.Tensor:
    """Mean mask logit of each instance over its own predicted mask, at prototype resolution -> (n,).

    coeffs: (n, nm); protos: (n, nm, h, w) (each instance's image); boxes: (n, 4) xyxy input pixels;
    scale: prototype pixels per input pixel. The mask is where the logit is > 0 inside the box (crop
    as ultralytics' `crop_mask`); an instance whose mask is empty there (ultralytics' predict drops it)
    gets the mean over its whole box instead: what would have to rise to make a mask.
    """
    logits = torch.einsum("nc,nchw->nhw", coeffs, protos)
    h, w = logits.shape[-2:]
    b = (boxes.to(logits.dtype) * scale)[:, :, None, None]
    cols = torch.arange(w, device=logits.device, dtype=logits.dtype)
    rows = torch.arange(h, device=logits.device, dtype=logits.dtype)[:, None]
    inside = (cols >= b[:, 0]) & (cols < b[:, 2]) & (rows >= b[:, 1]) & (rows < b[:, 3])  # (n, h, w)
    region = (logits.detach() > 0) & inside
    region = torch.where(region.flatten(1).any(1)[:, None, None], region, inside)
    total = (logits * region).flatten(1).sum(1)
    return total / region.flatten(1).sum(1).clamp(min=1)


def instance_masks(coeffs: torch.Tensor, protos: torch.Tensor, boxes: torch.Tensor, shape) -> torch.Tensor:
    """ultralytics' masks of n instances of one image: (n, H, W) uint8 at the input size `shape` (H, W).

    coeffs: (n, nm); protos: (nm, h, w); boxes: (n, 4) xyxy input pixels.
    """
    from ultralytics.utils.ops import process_mask

    return process_mask(protos.float(), coeffs.float(), boxes.float(), tuple(shape), upsample=True)


@dataclass
class InstanceMask:
    """One instance's mask, stored compactly: its bounding rectangle at the input (letterbox) resolution.

    bits: packed bits of the (h, w) crop; offset: (y, x) of the crop in the input; shape: the input
    (H, W); orig_shape: the original image (H0, W0).
    """

    bits: np.ndarray
    crop: tuple[int, int]
    offset: tuple[int, int]
    shape: tuple[int, int]
    orig_shape: tuple[int, int]

    @classmethod
    def from_mask(cls, mask: np.ndarray, orig_shape) -> "InstanceMask":
        """From an (H, W) input-resolution mask."""
        ys, xs = np.nonzero(mask)
        y0, x0 = (int(ys.min()), int(xs.min())) if len(ys) else (0, 0)
        y1, x1 = (int(ys.max()) + 1, int(xs.max()) + 1) if len(ys) else (0, 0)
        crop = np.ascontiguousarray(mask[y0:y1, x0:x1] > 0)
        return cls(np.packbits(crop), crop.shape, (y0, x0), tuple(mask.shape[:2]), tuple(orig_shape[:2]))

    def input_mask(self) -> np.ndarray:
        """The mask (H, W) bool at the input (letterbox) resolution, as `Results.masks.data`."""
        out = np.zeros(self.shape, bool)
        h, w = self.crop
        y, x = self.offset
        out[y:y + h, x:x + w] = np.unpackbits(self.bits, count=h * w).reshape(h, w).astype(bool)
        return out

    def full(self) -> np.ndarray:
        """The mask (H0, W0) bool in the original image (ultralytics' `scale_masks`, bilinear, > 0.5)."""
        from ultralytics.utils.ops import scale_masks

        data = torch.from_numpy(self.input_mask()).float()[None, None]
        return (scale_masks(data, self.orig_shape)[0, 0] > 0.5).numpy()

    def segments(self) -> list[list[list[float]]]:
        """Polygons [[x, y], ...] of the mask's outer contours in original-image pixels (one per part)."""
        import cv2
        from ultralytics.utils.ops import scale_coords

        contours = cv2.findContours(self.input_mask().astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[0]
        return [scale_coords(self.shape, c.reshape(-1, 2).astype(np.float32), self.orig_shape).tolist()
                for c in contours]

    def polygon(self) -> np.ndarray:
        """One polygon (K, 2) float32 in original-image pixels, exactly as `Results.masks.xy` gives it."""
        from ultralytics.utils.ops import masks2segments, scale_coords

        seg = masks2segments(self.input_mask()[None].astype(np.uint8))[0]
        return scale_coords(self.shape, seg, self.orig_shape, normalize=False)


def instance_fields(dets, lb, masks=None) -> dict[str, list]:
    """Segmentation's instance data (`detections.instance_data_to_original`): per detection its mask, from
    `masks` (n, H, W) at the input size, as an `InstanceMask` of the original image (compact: resized on
    access); the box is the plain detection's. No masks (e.g. D-RISE, which makes none): none."""
    if masks is None:
        return {}
    return {"instance_mask": [InstanceMask.from_mask(m.cpu().numpy(), lb.orig_shape) for m in masks]}


@dataclass
class PolygonMask:
    """A mask known only by its outlines (read back from a manifest): `segments` polygons [[x, y], ...] in
    original-image pixels, `orig_shape` (H0, W0). `full()` fills them (approximates the mask to about a pixel)."""

    polygons: list
    orig_shape: tuple[int, int]

    def segments(self) -> list[list[list[float]]]:
        return [list(map(list, seg)) for seg in self.polygons]

    def full(self) -> np.ndarray:
        import cv2

        out = np.zeros(self.orig_shape, np.uint8)
        pts = [np.round(np.asarray(seg, np.float32).reshape(-1, 2)).astype(np.int32) for seg in self.polygons if seg]
        cv2.fillPoly(out, pts, 1)
        return out.astype(bool)
