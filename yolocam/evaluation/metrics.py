"""Localisation and faithfulness metrics for per-detection heatmaps.

Localisation (maps and boxes in the same pixel frame, boxes xyxy in pixels; a pixel (row i,
column j) belongs to a box when its centre (j + 0.5, i + 0.5) lies inside it):
- `pointing_game`: the map's maximum falls inside the box;
- `energy_in_box`: share of the map's (rectified) mass inside the box (energy-based pointing game);
- `energy_in_boxes`: share on the union of several boxes (e.g. the other objects).

Faithfulness (re-running the detector): `deletion_insertion` curves with their AUC, and the
model-randomisation sanity check `model_randomisation` (cascading re-initialisation from the
head down; a faithful method's maps must change, i.e. have a low rank correlation).

Evidence (against a user-given mask or disc of the part that decides the class): `evidence_pointing`,
`evidence_share` and the box-only baselines `gaussian_box_map` / `uniform_box_map`, defined in
`evidence` and re-exported here. Instance regions (a mask, a rotated box, a keypoint): `pointing_in_mask`,
`energy_in_mask`, `rbox_mask`, `peak_distance`, defined in `instance_metrics` and re-exported here.

Stability under changes that should not matter (JPEG, shifts, resizing, noise): `stability`,
`aggregate`, `map_correlation`, `peak_kept`, `shift_image`, `unshift_map`, defined in `stability`
and re-exported here.

Inputs may be numpy arrays or torch tensors; everything is computed in torch.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from ..cam.box_scores import (_energy, as_boxes, as_heatmap, box_iou, box_masks,  # noqa: F401 (re-exported)
                              energy_in_box, energy_in_boxes, match_ground_truth, pointing_game)
from ..cam.engine import CamEngine, EngineResult
from ..errors import YolocamError
from ..model.adapter import HeadOutputs, ModelAdapter
from ..model.detections import Detection
from ..model.layers import TargetLayer
from .evidence import (DEFAULT_DILATE, disc_mask, evidence_pointing, evidence_region,  # noqa: F401 (re-exported)
                       evidence_scores, evidence_share, gaussian_box_map, uniform_box_map)
from .instance_metrics import energy_in_mask, peak_distance, pointing_in_mask, rbox_mask  # noqa: F401 (re-exported)
from .stability import (DEFAULT_PERTURBATIONS, aggregate, map_correlation, peak_kept,  # noqa: F401 (re-exported)
                        shift_image, stability, unshift_map)

PAD_VALUE = 114.0 / 255.0  # the letterbox grey: the "removed pixel" baseline


# ------------------------------------------------------------------ conversions
@dataclass
class Localisation:
    """Per-detection localisation scores against ground truth (all (N,) tensors; NaN where undefined).

    reference: index of the matched (true positive) or nearest (false positive) ground-truth box, -1 if none.
    tp: true positive at the IoU threshold. pointing / energy: against the reference box.
    energy_other: share on the union of all other ground-truth boxes. missed: (M,) ground truths not matched.
    """

    reference: torch.Tensor
    tp: torch.Tensor
    pointing: torch.Tensor
    energy: torch.Tensor
    energy_other: torch.Tensor
    missed: torch.Tensor


def nearest_ground_truth(boxes, gt_boxes) -> torch.Tensor:
    """(N,) index of the ground truth of highest IoU (any class; by centre distance when no overlap), -1 if none."""
    b, g = as_boxes(boxes), as_boxes(gt_boxes)
    if len(g) == 0:
        return torch.full((len(b),), -1, dtype=torch.long)
    iou = box_iou(b, g)
    centre = lambda x: (x[:, :2] + x[:, 2:]) / 2  # noqa: E731
    dist = torch.cdist(centre(b), centre(g))
    by_dist = dist.argmin(1)
    return torch.where(iou.amax(1) > 0, iou.argmax(1), by_dist)


def localise(heatmaps, boxes, classes, gt_boxes, gt_classes, tp=None, iou_thr: float = 0.5) -> Localisation:
    """Score N maps (N, H, W) of detections `boxes` (N, 4) / `classes` (N,) (highest confidence first)
    against ground truth (M, 4) / (M,). `tp` (N,) bool overrides the true-positive labels (e.g. the
    validator's own); the matched ground truth is then the greedy match among same-class boxes."""
    maps = as_heatmap(heatmaps).cpu()
    maps = maps.reshape(-1, *maps.shape[-2:])
    b, g = as_boxes(boxes), as_boxes(gt_boxes)
    cls, gcls = torch.as_tensor(classes).view(-1).long(), torch.as_tensor(gt_classes).view(-1).long()
    matched = match_ground_truth(b, cls, g, gcls, iou_thr)
    is_tp = matched >= 0 if tp is None else torch.as_tensor(tp).view(-1).bool()
    if tp is not None:  # a label the greedy replica did not reproduce: take the best same-class overlap
        fallback = (box_iou(b, g) * (cls[:, None] == gcls[None])).argmax(1) if len(g) else matched
        matched = torch.where(is_tp & (matched < 0), fallback, matched)
    ref = torch.where(is_tp, matched, nearest_ground_truth(b, g))
    n, (h, w) = len(b), maps.shape[-2:]
    nan = torch.full((n,), float("nan"))
    pointing, energy, other = nan.clone(), nan.clone(), torch.zeros(n)
    if len(g):
        masks = box_masks((h, w), g, maps.device)  # (M, H, W)
        total = maps.sum((-2, -1))
        peak = maps.amax((-2, -1), keepdim=True)
        at_peak = (maps == peak) & (peak > 0)
        has = ref >= 0
        r = ref.clamp(min=0)
        ref_mask = masks[r]  # (N, H, W)
        safe = total.clamp(min=1e-30)
        pointing = torch.where(has, (at_peak & ref_mask).flatten(1).any(1).float(), nan)
        energy = torch.where(has, torch.where(total > 0, (maps * ref_mask).sum((-2, -1)) / safe, 0.0), nan)
        others = torch.ones(n, len(g), dtype=torch.bool)
        others[has, r[has]] = False
        union = (others[:, :, None, None] & masks[None]).any(1)
        other = torch.where(total > 0, (maps * union).sum((-2, -1)) / safe, 0.0)
    claimed = torch.zeros(len(g), dtype=torch.bool)
    claimed[ref[is_tp & (ref >= 0)]] = True
    return Localisation(ref, is_tp, pointing, energy, other, ~claimed)


# ------------------------------------------------------------------ correlation
def rank(values: torch.Tensor) -> torch.Tensor:
    """Ranks (0-based) of a 1-D tensor, ties given their average rank."""
    v = values.flatten().double()
    sorted_v, order = v.sort(stable=True)
    _, inverse, counts = torch.unique_consecutive(sorted_v, return_inverse=True, return_counts=True)
    start = torch.cumsum(counts, 0) - counts
    avg = start.double() + (counts.double() - 1) / 2
    out = torch.empty_like(v)
    out[order] = avg[inverse]
    return out


def spearman(a, b) -> float:
    """Spearman rank correlation of two equally sized maps; 0 when either is constant."""
    ra, rb = rank(torch.as_tensor(a)), rank(torch.as_tensor(b))
    if ra.numel() != rb.numel():
        raise YolocamError(f"spearman: expected maps of equal size, got {ra.numel()} and {rb.numel()} values")
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = ra.norm() * rb.norm()
    return float((ra * rb).sum() / den) if den > 0 else 0.0


# ---------------------------------------------------------- deletion / insertion
@dataclass
class Curve:
    """fractions (K+1,) of pixels removed/inserted; scores (K+1,) relative to the unperturbed image; auc."""

    fractions: torch.Tensor
    scores: torch.Tensor
    auc: float


def auc(scores, fractions=None) -> float:
    """Trapezoidal area under `scores` over `fractions` (default evenly spaced on [0, 1])."""
    y = torch.as_tensor(scores, dtype=torch.float64)
    x = torch.linspace(0, 1, len(y), dtype=torch.float64) if fractions is None else torch.as_tensor(fractions).double()
    return float(torch.trapezoid(y, x)) if len(y) > 1 else 0.0


def pixel_order(heatmap, seed: int = 0) -> torch.Tensor:
    """(H, W) rank of each pixel by heat, hottest = 0; ties broken by a fixed random permutation."""
    h = as_heatmap(heatmap)
    flat = h.flatten()
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(flat.numel(), generator=gen).to(flat.device)
    order = perm[flat[perm].argsort(descending=True, stable=True)]
    ranks = torch.empty_like(order)
    ranks[order] = torch.arange(flat.numel(), device=flat.device)
    return ranks.view(h.shape)


def detection_score(head: HeadOutputs, box, cls: int) -> torch.Tensor:
    """(B,) best over raw predictions of (class-`cls` confidence x IoU with `box`), box in input pixels."""
    ref = as_boxes(box).to(head.boxes.device)[0]
    lt = torch.maximum(head.boxes[..., :2], ref[:2])
    rb = torch.minimum(head.boxes[..., 2:], ref[2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area = (head.boxes[..., 2:] - head.boxes[..., :2]).clamp(min=0).prod(-1)
    iou = inter / (area + (ref[2:] - ref[:2]).prod() - inter).clamp(min=1e-12)
    return (head.logits[..., cls].float().sigmoid() * iou).amax(-1)


def deletion_insertion(adapter: ModelAdapter, x, heatmap, box, cls: int, steps: int = 16,
                       baseline: float = PAD_VALUE, seed: int = 0) -> tuple[Curve, Curve]:
    """Deletion and insertion curves for one detection, from one batched forward of 2(K+1) images.

    x: (3, H, W) or (1, 3, H, W) letterboxed input in [0, 1]; heatmap: (H, W) in the same frame;
    box: the explained xyxy box (input pixels); cls: its class. Deletion replaces the hottest pixels
    with `baseline` (grey) in `steps` equal steps; insertion reveals them on a `baseline` canvas. The
    score is the best class-`cls` confidence x IoU with `box`, divided by its value on the unperturbed
    image. A faithful map gives a low deletion AUC and a high insertion AUC.
    """
    if int(steps) < 1:
        raise YolocamError(f"steps: expected a positive integer, got {steps}")
    img = torch.as_tensor(x).to(adapter.device, adapter.dtype)
    img = img[0] if img.ndim == 4 else img
    h = as_heatmap(heatmap).to(adapter.device)
    if h.shape != img.shape[-2:]:
        raise YolocamError(f"heatmap: expected the input's size {tuple(img.shape[-2:])}, got {tuple(h.shape)}")
    fractions = torch.linspace(0, 1, steps + 1, device=h.device)
    counts = (fractions * h.numel()).round().long()
    hot = pixel_order(h, seed)[None] < counts[:, None, None]  # (K+1, H, W): the hottest fraction k/K
    canvas = torch.full_like(img, baseline)
    deleted = torch.where(hot[:, None], canvas, img)
    inserted = torch.where(hot[:, None], img, canvas)
    with adapter.explaining(), torch.no_grad():
        _, head = adapter.forward(torch.cat([img[None], deleted, inserted]).contiguous())
        scores = detection_score(head, box, cls).float().cpu()
    start = scores[0].clamp(min=1e-12)
    dele, ins = scores[1:steps + 2] / start, scores[steps + 2:] / start
    frac = fractions.cpu()
    return Curve(frac, dele, auc(dele, frac)), Curve(frac, ins, auc(ins, frac))


# ------------------------------------------------- explaining fixed detections
def explain_fixed(engine: CamEngine, x: torch.Tensor,
                  select: Callable[[HeadOutputs], list[list[Detection]]]) -> EngineResult:
    """`CamEngine.run` with the detections from `select(head_outputs)` (e.g. a validator's kept
    predictions, or the same detections on a re-initialised model). Maps: (n_i, H, W) per image."""
    return engine.run(x, select=select)


# ------------------------------------------------------- model randomisation
@dataclass
class Randomisation:
    """layers: per cascade step, the top-level layer indices re-initialised so far (head first);
    correlations: (S, N) Spearman rank correlation of each detection's whole map before/after each step;
    box_correlations: (S, N) the same on the pixels inside the detection's box only. Per-anchor methods
    keep their heat near the anchor whatever the weights (the receptive field fixes where gradients
    flow), so the whole-map correlation stays high for them; inside the box their pattern must change."""

    layers: list[list[int]]
    correlations: torch.Tensor
    box_correlations: torch.Tensor

    @property
    def final(self) -> torch.Tensor:
        """(N,) correlations after the last step."""
        return self.correlations[-1]


def reinitialise(layer: torch.nn.Module, seed: int) -> None:
    """Re-initialise every sub-module's parameters in place (fixed seed; DFL's fixed projection is kept)."""
    keep = {id(c) for m in layer.modules() if type(m).__name__ == "DFL" for c in m.modules()}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in layer.modules():
            if id(m) not in keep and hasattr(m, "reset_parameters"):
                m.reset_parameters()


def engine_copy(engine: CamEngine) -> CamEngine:
    """The same engine (method, target, layers, fusion) on a deep copy of its model."""
    adapter = engine.adapter
    with torch.inference_mode(False):
        module = copy.deepcopy(adapter.module)
    new = ModelAdapter(module, end2end=adapter.end2end)
    layers = []
    for t in engine.layers:
        top, _, sub = t.name.partition(".")
        mod = new.layers[int(top)].get_submodule(sub) if sub else new.layers[int(top)]
        layers.append(TargetLayer(t.name, mod, t.top))
    return CamEngine(new, engine.method, engine.target, layers, fuse=engine.fuse, reshape_transform=engine.reshape,
                     memory_mb=engine.memory_mb, max_batch=engine.max_batch, seed=engine.seed,
                     smooth=engine.smooth, exact=engine.exact)


def randomised_copy(engine: CamEngine, stop: int | None = None, seed: int = 0) -> CamEngine:
    """`engine` on a deep copy of its model whose layers from the head down to `stop` (default: the
    earliest explained layer) are re-initialised (the full cascade)."""
    rand = engine_copy(engine)
    stop = min(t.top for t in engine.layers) if stop is None else int(stop)
    for i in range(len(rand.adapter.layers) - 1, stop - 1, -1):
        reinitialise(rand.adapter.layers[i], seed + i)
    return rand


def model_randomisation(engine: CamEngine, x: torch.Tensor, detections: Sequence[Sequence[Detection]] | None = None,
                        conf: float = 0.25, stop: int | None = None, every_step: bool = False,
                        seed: int = 0) -> Randomisation:
    """Sanity check: re-initialise a deep copy of the model layer by layer from the head down to
    layer `stop` (default: the earliest explained layer) and compare each detection's map with the
    original one (Spearman). `every_step` evaluates after each layer, else only at the end.
    `detections` default to those the engine finds in `x` at `conf`."""
    if detections is None:
        base = engine.run(x, conf=conf)
        detections = base.detections
    else:
        base = explain_fixed(engine, x, lambda head: [list(d) for d in detections])
    dets = [list(d) for d in detections]
    before = torch.cat(base.heatmaps).cpu() if base.heatmaps else torch.zeros(0)
    last = len(engine.adapter.layers) - 1
    stop = min(t.top for t in engine.layers) if stop is None else int(stop)
    if not 0 <= stop <= last:
        raise YolocamError(f"stop: expected a layer index in 0..{last} (the head is {last}), got {stop}")
    rand = engine_copy(engine)
    done, steps, rows, box_rows = [], [], [], []
    flat = [d for image_dets in dets for d in image_dets]
    for i in range(last, stop - 1, -1):
        reinitialise(rand.adapter.layers[i], seed + i)
        done.append(i)
        if every_step or i == stop:
            after = explain_fixed(rand, x, lambda head: dets).heatmaps
            after = torch.cat(after).cpu() if after else torch.zeros(0)
            steps.append(list(done))
            rows.append(torch.tensor([spearman(a, b) for a, b in zip(before, after)], dtype=torch.float64))
            box_rows.append(torch.tensor(box_spearman(before, after, flat), dtype=torch.float64))
    return Randomisation(steps, torch.stack(rows), torch.stack(box_rows))


def box_spearman(before: torch.Tensor, after: torch.Tensor, detections: Sequence[Detection]) -> list[float]:
    """Per detection, the Spearman correlation of two (N, H, W) map stacks inside its box."""
    out = []
    for a, b, d in zip(before, after, detections):
        inside = box_masks(tuple(a.shape), d.box, a.device)[0]
        out.append(spearman(a[inside], b[inside]) if inside.any() else 0.0)
    return out
