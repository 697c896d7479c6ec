"""Why not, over a validation: the ground truths the model missed, the boxes it confused, its use of context.

- **Missed**: each ground truth no kept prediction matched (`report.missed`) is explained as
  `Explainer.explain_missed` does (`explain.missed.best_predictions`): the raw prediction whose box overlaps it
  best (IoU in the validator's letterboxed input, ties by the ground-truth class's logit; OBB: rotated IoU),
  explained with the ground-truth class's logit. The record gains `gt` (its index in the image's labels),
  `anchor`, `level`, `logit`, `conf`, `iou`, `pred_box` and `pointing` / `energy` against the ground truth;
  its map (`rec["heatmap"]` or `rec.heatmap`, full size on access) goes to `OUT/missed.npz`.
- **Confusions**: an explained false positive whose box overlaps a ground truth of another class at IoU >=
  `CONFUSION_IOU` is also explained with `contrast:<true class>` (its class's logit minus the true class's at
  its anchor). The record gains `confused_with` (the true class's name), `confused_cls`, `confused_box` and
  `contrast_pointing` / `contrast_energy` against that ground truth, and the map (`rec.contrast_heatmap`).
- **Context** (`outside`): for each true positive, the share of its map's (positive) energy outside its
  matched ground-truth box grown by `CONTEXT_GROW` (width and height x 1.1 about the centre; OBB: the rotated
  box's). 0 when all the heat is on the object, near 1 when the box was found by what surrounds it.

Missed objects and confusions of one batch are explained in one engine pass (`WhyNotTarget`), on the
validator's own batch, with the Explainer's method, layers and fusion. D-RISE has no logit target: the records
then say why (`reason`) and carry no map.
"""

from __future__ import annotations

import io
import zipfile

import numpy as np
import torch

from ..cam.box_scores import box_iou, box_masks
from ..explain.missed import best_predictions, engine_with_target
from ..model.contrast import Contrast
from ..model.detections import Detection
from ..output.maps import MapRef, MapStack
from .instance_metrics import rbox_mask
from .task_validators import rbox_hull, rotated_iou

CONFUSION_IOU = 0.5  # a false positive over a ground truth of another class at this IoU is a confusion
CONTEXT_GROW = 0.1  # `outside`: energy outside the ground-truth box grown by 10 % (width and height)
NO_CONTRAST = -1  # Detection.versus of a missed object's job: the class logit alone


class MapRecord(dict):
    """A record (a plain dict for JSON and CSV) that also carries maps, full size on access: `rec["heatmap"]`
    or `rec.heatmap` (missed objects), `rec.contrast_heatmap` (confusions). The maps are not keys."""

    def attach(self, name: str, ref: MapRef) -> None:
        self.__dict__.setdefault("refs", {})[name] = ref

    def has_map(self, name: str) -> bool:
        return name in self.__dict__.get("refs", {})

    def stored(self, name: str) -> np.ndarray:
        """The map as kept: (h, w) over the letterbox content."""
        return self.__dict__["refs"][name].stored

    def __missing__(self, key):
        refs = self.__dict__.get("refs", {})
        if key in refs:
            return refs[key].full()
        raise KeyError(key)

    def __getattr__(self, name):
        refs = self.__dict__.get("refs", {})
        if name in refs:
            return refs[name].full()
        raise AttributeError(name)


class WhyNotTarget(Contrast):
    """Per job: its class's logit at its anchor, minus the logit of its `versus` class (a confusion's true
    class) when that is >= 0; a missed object's job (`NO_CONTRAST`) keeps the class logit alone. The other
    class is set when the jobs are selected, never recomputed."""

    def __init__(self):
        super().__init__(None)
        self.name = "why-not"

    def bind(self, names):
        return self

    def prepare(self, logits, dets):
        return [list(d) for d in dets]

    def refusal(self, det):
        return None

    def __call__(self, outputs, jobs):
        rows = torch.arange(len(jobs.detections), device=outputs.logits.device)
        own = outputs.logits[rows, jobs.anchor, jobs.cls]
        if jobs.versus is None:
            return own
        other = outputs.logits[rows, jobs.anchor, jobs.versus.clamp(min=0)]
        return own - torch.where(jobs.versus >= 0, other, torch.zeros_like(other))


# ------------------------------------------------------------------ geometry
def content_window(pb, shape) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the image content inside the validator's letterboxed input."""
    (gh, gw), (left, top) = pb["ratio_pad"]
    h0, w0 = (int(v) for v in pb["ori_shape"])
    top, left = int(round(float(top))), int(round(float(left)))
    ch = min(int(round(h0 * float(gh))), int(shape[0]) - top)
    cw = min(int(round(w0 * float(gw))), int(shape[1]) - left)
    return top, left, max(ch, 1), max(cw, 1)


def to_original(boxes: torch.Tensor, pb) -> torch.Tensor:
    """(N, 4) xyxy boxes from the validator's input pixels to original-image pixels (clipped)."""
    (gh, gw), (left, top) = pb["ratio_pad"]
    h0, w0 = (float(v) for v in pb["ori_shape"])
    out = boxes.clone().float()
    out[:, [0, 2]] = ((out[:, [0, 2]] - float(left)) / float(gw)).clamp(0, w0)
    out[:, [1, 3]] = ((out[:, [1, 3]] - float(top)) / float(gh)).clamp(0, h0)
    return out


def region_mask(shape: tuple[int, int], box) -> torch.Tensor:
    """(H, W) bool: an xyxy box (4 numbers) or a rotated box (cx, cy, w, h, angle: 5 numbers), pixel centres."""
    b = torch.as_tensor(box, dtype=torch.float32).reshape(-1)
    return rbox_mask(shape, b) if len(b) == 5 else box_masks(shape, b[None])[0]


def grown(box, grow: float = CONTEXT_GROW) -> torch.Tensor:
    """The box with width and height scaled by (1 + grow) about its centre (xyxy, or cx, cy, w, h, angle)."""
    b = torch.as_tensor(box, dtype=torch.float64).reshape(-1).clone()
    if len(b) == 5:
        b[2:4] *= 1 + grow
        return b
    half = (b[2:] - b[:2]) * (1 + grow) / 2
    centre = (b[2:] + b[:2]) / 2
    return torch.cat([centre - half, centre + half])


def outside_share(heatmap, box, grow: float = CONTEXT_GROW) -> float | None:
    """Share of the map's positive energy outside `box` grown by `grow` (see `grown`); None for a zero map."""
    h = torch.as_tensor(np.asarray(heatmap) if not torch.is_tensor(heatmap) else heatmap).float().clamp(min=0)
    total = float(h.sum())
    if total <= 0:
        return None
    inside = float(h[region_mask(tuple(h.shape), grown(box, grow))].sum())
    return max(0.0, 1.0 - inside / total)


def score_map(heatmap: torch.Tensor, box) -> tuple[bool, float]:
    """(pointing game, energy in box) of a map's positive part against an xyxy or rotated box."""
    h = heatmap.float().clamp(min=0)
    mask = region_mask(tuple(h.shape), box)
    total, peak = float(h.sum()), float(h.max()) if h.numel() else 0.0
    if total <= 0:
        return False, 0.0
    return bool(((h == peak) & mask).any()), float(h[mask].sum()) / total


def _shifted(box: torch.Tensor, top: int, left: int) -> torch.Tensor:
    b = box.clone().float()
    b[0] -= left
    b[1] -= top
    if len(b) == 4:
        b[2] -= left
        b[3] -= top
    return b


# ------------------------------------------------------------------ the collector's pass
class WhyNot:
    """Explains a validation batch's missed ground truths and confusions (see the module docstring)."""

    def __init__(self, collector):
        self.collector = collector
        self.images = self.missed_explained = 0

    def add_batch(self, img: torch.Tensor, pending, records: list[dict], missed: list[dict]) -> None:
        """img: the validator's batch; pending: per image (preds, labels, tp); records / missed: this batch's new
        prediction records and missed ground truths (in the collector's lists, updated in place)."""
        col = self.collector
        exp = col.exp
        rotated = exp.adapter.task == "obb"
        by_file = {pb["im_file"]: si for si, (_, pb, _) in enumerate(pending)}
        jobs: dict[int, dict] = {}
        if getattr(exp, "engine", None) is None:  # D-RISE: no logits to differentiate
            for m in missed:
                m["reason"] = f"method {exp.method.name!r} explains no chosen logit: no map"
            return
        for m in missed:
            jobs.setdefault(by_file[m["image"]], {"missed": [], "confused": []})["missed"].append(m)
        for rec in records:
            if rec["tp"]:
                continue
            si = by_file[rec["image"]]
            pred, pb, _ = pending[si]
            g, iou = _other_class_overlap(pred["bboxes"][rec["index"]].cpu().float(), rec["cls"],
                                          pb["bboxes"].cpu().float(), pb["cls"].cpu().long(), rotated)
            if g >= 0 and iou >= CONFUSION_IOU:
                true = int(pb["cls"][g])
                rec.update(confused_with=exp.names.get(true, str(true)), confused_cls=true, confused_gt=g,
                           confused_iou=iou)
                jobs.setdefault(si, {"missed": [], "confused": []})["confused"].append(rec)
        cap_images, cap = col.max_images, col.max_explanations
        chosen = []
        for si in sorted(jobs):
            if cap_images is not None and self.images >= cap_images:
                break
            if cap is not None:
                room = max(0, cap - self.missed_explained)
                jobs[si]["missed"] = jobs[si]["missed"][:room]
            self.missed_explained += len(jobs[si]["missed"])
            if jobs[si]["missed"] or jobs[si]["confused"]:
                chosen.append(si)
                self.images += 1
        if chosen:
            self._explain(img, pending, [(si, jobs[si]) for si in chosen], rotated)

    def _explain(self, img, pending, work, rotated: bool) -> None:
        col = self.collector
        exp = col.exp
        adapter = exp.adapter
        rows = torch.tensor([si for si, _ in work], device=img.device)
        x = img.index_select(0, rows).to(adapter.device, adapter.dtype)
        extra: list[list[tuple[float, float]]] = []  # per row, per missed job: (logit, iou)

        def select(head):
            out = []
            for b, (si, job) in enumerate(work):
                pred, pb, _ = pending[si]
                gts = [m["gt"] for m in job["missed"]]
                boxes, cls = pb["bboxes"].cpu().float()[gts], pb["cls"].cpu().long()[gts]
                dets, info = [], []
                if gts:
                    iou = rotated_iou(head.rboxes[b].float(), boxes) if rotated else None
                    hulls = rbox_hull(boxes) if rotated else boxes
                    found = best_predictions(head, hulls, cls, row=b, iou=iou)
                    for j, d in enumerate(found):
                        a = d.anchor
                        overlap = iou[a, j] if rotated else box_iou(torch.tensor([d.box]), hulls[j:j + 1])[0, 0]
                        info.append((float(head.logits[b, a, d.cls]), float(overlap)))
                        rbox = tuple(float(v) for v in head.rboxes[b, a]) if rotated else None
                        dets.append(Detection(b, a, d.level, d.cls, d.conf, d.box, rbox=rbox, versus=NO_CONTRAST))
                for rec in job["confused"]:
                    box = pred["bboxes"][rec["index"]].float()
                    hull = rbox_hull(box[None])[0] if rotated else box
                    dets.append(Detection(b, rec["anchor"], rec["level"], rec["cls"], rec["conf"],
                                          tuple(float(v) for v in hull), versus=rec["confused_cls"]))
                extra.append(info)
                out.append(dets)
            return out

        engine = engine_with_target(exp, WhyNotTarget(), "why_not")
        result = engine.run(x, select=select)
        signed = bool(getattr(engine, "signed", False))
        for b, (si, job) in enumerate(work):
            _, pb, _ = pending[si]
            maps, dets, reasons = result.heatmaps[b], result.detections[b], result.reasons[b]
            top, left, ch, cw = content_window(pb, maps.shape[-2:])
            crop = maps[:, top:top + ch, left:left + cw].float().cpu()
            stack = MapStack(crop.half().numpy(), tuple(int(v) for v in pb["ori_shape"]), signed=signed)
            gt_all = pb["bboxes"].cpu().float()
            n_missed = len(job["missed"])
            for k, (m, (logit, iou)) in enumerate(zip(job["missed"], extra[b])):
                d = dets[k]
                pred_box = torch.tensor([d.box]) if d.rbox is None else rbox_hull(torch.tensor([d.rbox]))
                pointing, energy = score_map(crop[k], _shifted(gt_all[m["gt"]], top, left))
                m.update(anchor=d.anchor, level=d.level, logit=logit, conf=float(torch.tensor(logit).sigmoid()),
                         iou=iou, pred_box=to_original(pred_box, pb)[0].tolist(), pointing=pointing, energy=energy)
                if reasons[k] is not None:
                    m["reason"] = reasons[k]
                m.attach("heatmap", MapRef(stack, k))
                col.worst.offer(m, crop[k], kind="missed")
            for k, rec in enumerate(job["confused"], n_missed):
                pointing, energy = score_map(crop[k], _shifted(gt_all[rec["confused_gt"]], top, left))
                hull = rbox_hull(gt_all[rec["confused_gt"]][None]) if rotated else gt_all[rec["confused_gt"]][None]
                rec.update(confused_box=to_original(hull, pb)[0].tolist(), contrast_pointing=pointing,
                           contrast_energy=energy)
                rec.attach("contrast_heatmap", MapRef(stack, k))
                col.worst.offer(rec, crop[k], kind="confusion")


def _other_class_overlap(box, cls: int, gt_boxes, gt_cls, rotated: bool) -> tuple[int, float]:
    """(index, IoU) of the ground truth of another class that overlaps `box` most; (-1, 0) when none."""
    other = gt_cls != int(cls)
    if not bool(other.any()):
        return -1, 0.0
    iou = (rotated_iou(box[None], gt_boxes) if rotated else box_iou(box[None], gt_boxes))[0]
    iou = torch.where(other, iou, torch.full_like(iou, -1.0))
    g = int(iou.argmax())
    return g, float(iou[g])


def context_outside(crop: torch.Tensor, reference, tp, gt_in_crop: torch.Tensor) -> list[float | None]:
    """`outside` of each true positive (its map, its matched ground truth in the crop's pixels); None else."""
    out = []
    for k in range(len(crop)):
        ref = int(reference[k])
        out.append(outside_share(crop[k], gt_in_crop[ref]) if bool(tp[k]) and ref >= 0 else None)
    return out


# ------------------------------------------------------------------ report parts
def confusion_table(records: list[dict], names: dict) -> list[dict]:
    """Per (predicted, true) class pair with confusions: count and the mean contrast pointing / energy."""
    pairs: dict[tuple[int, int], list[dict]] = {}
    for r in records:
        if r.get("confused_cls") is not None:
            pairs.setdefault((int(r["cls"]), int(r["confused_cls"])), []).append(r)
    rows = []
    for (p, t), recs in sorted(pairs.items()):
        scored = [r for r in recs if r.get("contrast_energy") is not None]
        rows.append({"predicted": names.get(p, str(p)), "true": names.get(t, str(t)), "predicted_cls": p,
                     "true_cls": t, "count": len(recs), "explained": len(scored),
                     "pointing": float(np.mean([r["contrast_pointing"] for r in scored])) if scored else float("nan"),
                     "energy": float(np.mean([r["contrast_energy"] for r in scored])) if scored else float("nan")})
    return rows


def missed_npz(missed: list[dict]) -> bytes | None:
    """`OUT/missed.npz` of the missed records that carry a map, in their order: `heatmaps` (N, h, w) float16 over
    each image's letterbox content (zero-padded to the largest h, w when images differ), `map_size` (N, 2) each
    map's own (h, w), `image_size` (N, 2) the original (H, W), `index` (N,) its place in metrics.json's `missed`
    (all of them when every record has one), `signed` when the maps are signed. None when no record has one."""
    keep = [i for i, m in enumerate(missed) if isinstance(m, MapRecord) and m.has_map("heatmap")]
    if not keep:
        return None
    maps = [missed[i].stored("heatmap") for i in keep]
    h, w = max(m.shape[0] for m in maps), max(m.shape[1] for m in maps)
    heat = np.zeros((len(maps), h, w), np.float16)
    for k, m in enumerate(maps):
        heat[k, :m.shape[0], :m.shape[1]] = m
    refs = [missed[i].__dict__["refs"]["heatmap"] for i in keep]
    arrays = {"heatmaps": heat, "map_size": np.asarray([m.shape for m in maps], np.int32).reshape(-1, 2),
              "image_size": np.asarray([r.stack.size for r in refs], np.int32).reshape(-1, 2),
              "index": np.asarray(keep, np.int32)}
    if any(r.stack.signed for r in refs):
        arrays["signed"] = np.asarray(1, np.int8)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for name, array in arrays.items():
            with zf.open(f"{name}.npy", "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.asanyarray(array), allow_pickle=False)
    return buf.getvalue()


def load_missed_maps(path) -> list[np.ndarray]:
    """The full-size maps of an `OUT/missed.npz` (float32 (H, W) each, in its order), as `rec.heatmap` gives them."""
    with np.load(path) as z:
        signed = "signed" in z.files
        out = []
        for heat, (h, w), size in zip(z["heatmaps"], z["map_size"], z["image_size"]):
            stack = MapStack(heat[None, :h, :w].astype(np.float32), tuple(int(v) for v in size), signed=signed)
            out.append(stack.full(0))
        return out
