"""Stability: does a detection's map stay put when the image changes in ways that should not matter?

Perturbations (`Perturbation`, named by strings): `jpeg90` / `jpeg75` (re-saved as JPEG at that quality),
`shift2_1` (the content moved 2 px right and 1 down, edge pixels filling in, the size kept; negative
values move left / up), `resize0.95` / `resize1.05` (the image resized by that factor), `noise2`
(Gaussian noise of sigma 2 grey levels, fixed seed). `DEFAULT_PERTURBATIONS` holds the benchmark's set.

For each detection of the original image, the perturbed image is explained again, the detection
matched again (same class, best IoU after its box is mapped back into the original frame, greedy by
confidence, IoU >= 0.5, else 'lost'), and its map mapped back into the original frame (the shift or
resize undone exactly; pixels a shift cropped away count as missing). Per detection:

- `map_correlation`: Pearson correlation of the two maps inside the box grown by 25 % (and clipped);
- `peak_kept`: the peaks (inside that region) lie at most `tol` = 8 px apart;
- the model's own change for reference: |delta conf| and the IoU of the original and re-matched box.

`aggregate` summarises the records per perturbation (median and 10th percentile r, peak kept share,
median |delta conf| and box IoU over the matched detections, matched share). Conventions as in
`metrics`: pixel (row i, column j) has its centre at (j + 0.5, i + 0.5). Maps are torch tensors;
images (numpy BGR uint8) are changed with numpy / OpenCV only.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np
import torch

from ..cam.box_scores import box_iou, match_ground_truth

from ..errors import YolocamError

__all__ = ["Perturbation", "DEFAULT_PERTURBATIONS", "parse_perturbation", "perturb", "shift_image", "unshift_map",
           "resize_image", "resize_boxes", "resize_map", "map_back", "boxes_back", "grown_region",
           "map_correlation", "peak_kept", "peak_position", "compare_maps", "match_detections", "stability",
           "aggregate"]

DEFAULT_PERTURBATIONS = ("jpeg90", "jpeg75", "shift1_0", "shift2_1", "shift4_4", "shift5_0", "shift7_3",
                         "resize0.95", "resize1.05", "noise2")
DEFAULT_GROW = 0.25
DEFAULT_TOL = 8.0
_PATTERN = re.compile(r"^(jpeg)(\d+)$|^(shift)(-?\d+)(?:_(-?\d+))?$|^(resize)(\d*\.?\d+)$|^(noise)(\d*\.?\d+)$")


# ------------------------------------------------------------------ perturbations
@dataclass(frozen=True)
class Perturbation:
    """kind: jpeg (a = quality), shift (a = dx, b = dy, pixels), resize (a = factor), noise (a = sigma, b = seed)."""

    kind: str
    a: float
    b: float = 0.0

    @property
    def name(self) -> str:
        if self.kind == "shift":
            return f"shift{int(self.a)}_{int(self.b)}"
        if self.kind == "jpeg":
            return f"jpeg{int(self.a)}"
        return f"{self.kind}{self.a:g}"


def parse_perturbation(spec) -> Perturbation:
    """'jpeg90', 'shift2_1' (dx 2, dy 1; 'shift5' = 'shift5_0'), 'resize0.95', 'noise2' -> a `Perturbation`."""
    if isinstance(spec, Perturbation):
        return spec
    m = _PATTERN.match(str(spec).strip().lower())
    if m is None:
        raise YolocamError(f"perturbation: expected jpegQ, shiftDX_DY, resizeF or noiseS (e.g. jpeg90, shift2_1, "
                           f"resize0.95, noise2), got {spec!r}")
    if m.group(1):
        q = int(m.group(2))
        if not 1 <= q <= 100:
            raise YolocamError(f"perturbation {spec!r}: expected a JPEG quality in 1..100, got {q}")
        return Perturbation("jpeg", q)
    if m.group(3):
        return Perturbation("shift", int(m.group(4)), int(m.group(5) or 0))
    if m.group(6):
        f = float(m.group(7))
        if not 0.1 <= f <= 10:
            raise YolocamError(f"perturbation {spec!r}: expected a resize factor in 0.1..10, got {f}")
        return Perturbation("resize", f)
    return Perturbation("noise", float(m.group(9)), 0)


def perturb(image: np.ndarray, p) -> np.ndarray:
    """The BGR uint8 image under perturbation `p` (a `Perturbation` or its name)."""
    p = parse_perturbation(p)
    if p.kind == "jpeg":
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(p.a)])
        if not ok:
            raise YolocamError(f"perturbation {p.name}: OpenCV could not encode the image as JPEG")
        return cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if p.kind == "shift":
        return shift_image(image, int(p.a), int(p.b))
    if p.kind == "resize":
        return resize_image(image, p.a)
    noise = np.random.default_rng(int(p.b)).normal(0.0, p.a, image.shape)
    return np.clip(np.rint(image.astype(np.float64) + noise), 0, 255).astype(np.uint8)


def shift_image(image: np.ndarray, dx: int, dy: int, border: str = "edge") -> np.ndarray:
    """The image content moved by (dx, dy) pixels (right / down when positive), same size: the side it
    leaves is filled by `border` (a `numpy.pad` mode: edge repeats the border pixels), the other is cropped."""
    h, w = image.shape[:2]
    dx, dy = int(dx), int(dy)
    if abs(dx) >= w or abs(dy) >= h:
        raise YolocamError(f"shift ({dx}, {dy}): expected less than the image's size {w} x {h}")
    pad = [(max(dy, 0), max(-dy, 0)), (max(dx, 0), max(-dx, 0))] + [(0, 0)] * (image.ndim - 2)
    padded = np.pad(image, pad, mode=border)
    y0, x0 = max(-dy, 0), max(-dx, 0)
    return np.ascontiguousarray(padded[y0:y0 + h, x0:x0 + w])


def unshift_map(heat, dx: int, dy: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A map (..., H, W) of the image shifted by (dx, dy), moved back into the original frame.

    Returns (map, valid): valid (H, W) bool marks the original pixels still inside the shifted image
    (the rest, cropped away by the shift, is 0 in the map)."""
    t = torch.as_tensor(heat)
    h, w = t.shape[-2:]
    dx, dy = int(dx), int(dy)
    out = torch.zeros_like(t)
    valid = torch.zeros((h, w), dtype=torch.bool, device=t.device)
    ys, xs = slice(max(-dy, 0), h - max(dy, 0)), slice(max(-dx, 0), w - max(dx, 0))  # original pixels kept
    src_y, src_x = slice(ys.start + dy, ys.stop + dy), slice(xs.start + dx, xs.stop + dx)
    out[..., ys, xs] = t[..., src_y, src_x]
    valid[ys, xs] = True
    return out, valid


def resize_image(image: np.ndarray, factor: float) -> np.ndarray:
    """The image resized by `factor` (each side rounded; area sampling to shrink, bilinear to enlarge)."""
    h, w = image.shape[:2]
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR)


def resize_boxes(boxes, src_shape: tuple[int, int], dst_shape: tuple[int, int]) -> torch.Tensor:
    """xyxy boxes (N, 4) of an image of size src_shape (H, W) in the pixels of dst_shape (H, W)."""
    b = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    sx, sy = dst_shape[1] / src_shape[1], dst_shape[0] / src_shape[0]
    return b * torch.tensor([sx, sy, sx, sy])


def resize_map(heat, shape: tuple[int, int]) -> torch.Tensor:
    """A map (H', W') resampled to shape (H, W) (bilinear, pixel centres aligned as OpenCV does)."""
    t = torch.as_tensor(heat).float()
    if tuple(t.shape[-2:]) == tuple(shape):
        return t
    return torch.nn.functional.interpolate(t[None, None], size=tuple(shape), mode="bilinear",
                                           align_corners=False)[0, 0]


def map_back(heat, p, shape: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(map, valid) of a perturbed image's map (H', W') in the original frame `shape` (H, W)."""
    p = parse_perturbation(p)
    t = torch.as_tensor(heat).float()
    if p.kind == "shift":
        return unshift_map(t, int(p.a), int(p.b))
    t = resize_map(t, shape)
    return t, torch.ones(tuple(shape), dtype=torch.bool, device=t.device)


def boxes_back(boxes, p, perturbed_shape: tuple[int, int], shape: tuple[int, int]) -> torch.Tensor:
    """xyxy boxes (N, 4) found on the perturbed image, in the original image's pixels."""
    p = parse_perturbation(p)
    b = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    if p.kind == "shift":
        return b - torch.tensor([p.a, p.b, p.a, p.b], dtype=torch.float32)
    return resize_boxes(b, perturbed_shape, shape)


# ------------------------------------------------------------------ per-map scores
def grown_region(shape: tuple[int, int], box, grow: float = DEFAULT_GROW) -> torch.Tensor:
    """(H, W) bool: pixels whose centres lie in `box` (xyxy) with its width and height grown by `grow` (0.25 = 25 %)."""
    b = torch.as_tensor(box, dtype=torch.float32).reshape(-1)
    if b.numel() != 4:
        raise YolocamError(f"box: expected 4 numbers x1, y1, x2, y2, got {b.numel()}")
    half = (b[2:] - b[:2]) * (1 + float(grow)) / 2
    centre = (b[:2] + b[2:]) / 2
    lo, hi = centre - half, centre + half
    ys = torch.arange(shape[0], dtype=torch.float32)[:, None] + 0.5
    xs = torch.arange(shape[1], dtype=torch.float32)[None, :] + 0.5
    return (xs >= lo[0]) & (xs <= hi[0]) & (ys >= lo[1]) & (ys <= hi[1])


def _pair(a, b) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = (torch.nan_to_num(torch.as_tensor(m).double()) for m in (a, b))
    if x.ndim != 2 or x.shape != y.shape:
        raise YolocamError(f"maps: expected two (H, W) maps of one size, got {tuple(x.shape)} and {tuple(y.shape)}")
    return x, y


def map_correlation(a, b, box, grow: float = DEFAULT_GROW, valid=None) -> float:
    """Pearson correlation of maps a and b (H, W) on the pixels of `box` grown by `grow` (and in `valid`,
    an (H, W) bool of the pixels both maps cover); 0.0 when either map is constant there."""
    x, y = _pair(a, b)
    region = grown_region(tuple(x.shape), box, grow).to(x.device)
    if valid is not None:
        region &= torch.as_tensor(valid, dtype=torch.bool, device=x.device)
    u, v = x[region], y[region]
    if u.numel() < 2:
        return 0.0
    u, v = u - u.mean(), v - v.mean()
    den = u.norm() * v.norm()
    return float((u * v).sum() / den) if den > 0 else 0.0


def peak_position(heat, region=None) -> tuple[float, float] | None:
    """(x, y) of the map's maximum in `region` (the mean position of tied maxima, pixel centres); None if
    the map is all zero there."""
    t = torch.nan_to_num(torch.as_tensor(heat).double())
    if region is not None:
        t = torch.where(torch.as_tensor(region, dtype=torch.bool, device=t.device), t, torch.zeros_like(t))
    peak = t.max()
    if peak <= 0:
        return None
    rows, cols = torch.nonzero(t == peak, as_tuple=True)
    return float(cols.double().mean()) + 0.5, float(rows.double().mean()) + 0.5


def peak_kept(a, b, tol: float = DEFAULT_TOL, region=None) -> bool:
    """True when the maxima of maps a and b (H, W) (within `region`, an (H, W) bool) lie at most `tol` px apart;
    False when either map is all zero there."""
    x, y = _pair(a, b)
    pa, pb = peak_position(x, region), peak_position(y, region)
    return pa is not None and pb is not None and math.hypot(pa[0] - pb[0], pa[1] - pb[1]) <= float(tol)


def match_detections(boxes, classes, new_boxes, new_classes, iou_thr: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Each detection (boxes (N, 4), classes (N,), highest confidence first) matched to one of the new ones
    (same frame): greedy, same class, best IoU >= `iou_thr`. Returns (index (N,) long, -1 = lost; IoU (N,))."""

    index = match_ground_truth(boxes, classes, new_boxes, new_classes, iou_thr)
    iou = box_iou(boxes, new_boxes) if len(index) and torch.as_tensor(new_boxes).numel() else torch.zeros(len(index), 0)
    got = index.clamp(min=0)
    value = iou[torch.arange(len(index)), got] if iou.shape[1] else torch.zeros(len(index))
    return index, torch.where(index >= 0, value, torch.nan)


def compare_maps(a, b, box, valid=None, grow: float = DEFAULT_GROW, tol: float = DEFAULT_TOL) -> dict:
    """r (`map_correlation`), peak_shift (px between the peaks; inf when a map is zero) and peak_kept
    (shift <= tol) of maps a and b (H, W) on `box` grown by `grow`, within `valid` (H, W) bool."""
    region = grown_region(tuple(torch.as_tensor(a).shape), box, grow)
    if valid is not None:
        region &= torch.as_tensor(valid, dtype=torch.bool)
    pa, pb = peak_position(a, region), peak_position(b, region)
    shift = math.hypot(pa[0] - pb[0], pa[1] - pb[1]) if pa and pb else math.inf
    return {"r": map_correlation(a, b, box, grow, valid), "peak_shift": shift, "peak_kept": shift <= float(tol)}


# ------------------------------------------------------------------ re-explaining
def stability(explainer, image: np.ndarray, perturbations: Sequence = DEFAULT_PERTURBATIONS, conf: float | None = None,
              iou: float = 0.7, grow: float = DEFAULT_GROW, tol: float = DEFAULT_TOL, match_iou: float = 0.5,
              base=None) -> list[dict]:
    """One record per (perturbation, detection of `image`): the image (BGR uint8) explained by `explainer`
    (an `Explainer`) and re-explained under each perturbation. `base`: the image's own `ImageExplanation`
    when already computed. Record keys: perturbation, detection, cls, conf, matched, r, peak_kept,
    peak_shift (px), dconf (|delta conf|), box_iou (NaN / None where lost)."""
    if not isinstance(image, np.ndarray) or image.ndim != 3:
        raise YolocamError(f"image: expected a BGR uint8 array (H, W, 3), got {type(image).__name__}")
    ps = [parse_perturbation(p) for p in perturbations]
    shape = image.shape[:2]
    base = base if base is not None else explainer.explain(image, conf=conf, iou=iou)[0]
    dets = base.detections
    if not dets:
        return []
    maps = [torch.from_numpy(np.asarray(d.heatmap, np.float32)) for d in dets]
    boxes = torch.tensor([d.box for d in dets], dtype=torch.float32)
    classes = torch.tensor([d.cls for d in dets])
    records = []
    for p in ps:
        changed = perturb(image, p)
        new = explainer.explain(changed, conf=conf, iou=iou)[0].detections
        new_boxes = boxes_back([d.box for d in new], p, changed.shape[:2], shape)
        index, ious = match_detections(boxes, classes, new_boxes, [d.cls for d in new], match_iou)
        for k, (d, heat, j) in enumerate(zip(dets, maps, index.tolist())):
            rec = {"perturbation": p.name, "detection": k, "cls": int(d.cls), "conf": float(d.conf), "matched": j >= 0,
                   "r": float("nan"), "peak_kept": None, "peak_shift": float("nan"), "dconf": float("nan"),
                   "box_iou": float(ious[k])}
            if j >= 0:
                back, valid = map_back(new[j].heatmap, p, shape)
                rec.update(compare_maps(heat, back, boxes[k], valid, grow, tol),
                           dconf=abs(float(new[j].conf) - float(d.conf)))
            records.append(rec)
    return records


def _quantile(values: list[float], q: float) -> float:
    t = torch.tensor(values, dtype=torch.float64)
    return float(torch.quantile(t, q)) if t.numel() else float("nan")


def aggregate(records: Sequence[dict]) -> list[dict]:
    """Per perturbation (in first-seen order): detections, matched (share), r_median, r_p10, peak_kept (share),
    dconf_median, box_iou_median (the last five over the matched detections)."""
    names = list(dict.fromkeys(r["perturbation"] for r in records))
    rows = []
    for name in names:
        recs = [r for r in records if r["perturbation"] == name]
        hit = [r for r in recs if r["matched"]]
        rs = [r["r"] for r in hit]
        rows.append({"perturbation": name, "detections": len(recs), "matched": len(hit) / len(recs),
                     "r_median": _quantile(rs, 0.5), "r_p10": _quantile(rs, 0.1),
                     "peak_kept": sum(bool(r["peak_kept"]) for r in hit) / len(hit) if hit else float("nan"),
                     "dconf_median": _quantile([r["dconf"] for r in hit], 0.5),
                     "box_iou_median": _quantile([r["box_iou"] for r in hit], 0.5)})
    return rows
