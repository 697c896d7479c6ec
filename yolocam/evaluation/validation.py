"""Explain what ultralytics' own validator sees: its kept predictions, labelled true or false positive
by its own matching (the tp matrix at IoU 0.5), with localisation metrics per class.

`validate()` runs the validator of the model's task (`DetectionValidator`, `SegmentationValidator`,
`PoseValidator`, `OBBValidator`; see `task_validators`) through `YOLO.val(validator=...)` when there is
a wrapper, so its metrics are those of a plain `model.val()` with the same arguments. Inside the validator's
`update_metrics` (which runs under `torch.inference_mode`), every kept prediction with confidence
>= `conf` is explained with gradients, on the validator's own letterboxed batch. Metrics are taken on
the letterboxed image without its padding: against the ground-truth box for detect, segment and pose,
against the rotated ground-truth box for obb.

Files written to `out`: see `compare.ValidationReport.save`, plus ultralytics' own folder val/.
"""

from __future__ import annotations

import logging
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .._text import printable
from ..errors import YolocamError
from ..defaults import DEFAULT_FUSE, DEFAULT_LAYERS, DEFAULT_METHOD
from ..explain.explainer import Explainer, resolve_model
from ..model.detections import Detection
from .metrics import Localisation, explain_fixed, localise, match_ground_truth
from .dataset_scan import check_names, names_warning, skipped_warning, val_images
from .report import ValidationReport, WorstCases, build_report
from .task_validators import (ANCHOR_TOLERANCE_PX, ANCHOR_TOLERANCE_REL, check_pose_dataset, explaining_validator,
                              greedy_match, localise_rotated, rbox_distance, rbox_hull, rbox_to_original, rotated_iou)
from .why_not import MapRecord, WhyNot, context_outside, content_window as _content, to_original as _to_original


log = logging.getLogger("yolocam")
ExplainingValidator = explaining_validator("detect")  # DetectionValidator + recording (see task_validators)


class Collector:
    """Explains validator predictions and accumulates per-prediction records, missed boxes, worst cases; the
    missed boxes and confusions are explained too (`why_not.WhyNot`).

    conf: explain predictions with confidence >= conf; max_images / max_explanations: caps (None = all).
    """

    def __init__(self, explainer: Explainer, conf: float = 0.25, max_images: int | None = None,
                 max_explanations: int | None = None, worst: int = 12, rebuild=None):
        self.exp, self.conf = explainer, float(conf)
        self.rebuild = rebuild  # end2end flag -> Explainer on the head branch the validator uses
        self.max_images, self.max_explanations = max_images, max_explanations
        self.records: list[dict] = []
        self.missed: list[dict] = []
        self.worst = WorstCases(worst)
        self.why_not = WhyNot(self)
        self.images_seen = self.images_explained = 0
        self.unmatched = 0  # validator predictions with no identical raw prediction (should stay 0)
        self.label_mismatches = 0  # greedy replica disagreeing with the validator's tp label (should stay 0)

    def start(self, end2end: bool) -> None:
        """Called by the validator before its first batch: match its head branch (end-to-end or NMS)."""
        if self.exp.adapter.end2end != end2end and self.rebuild is not None:
            self.exp = self.rebuild(end2end)

    def budget(self) -> int:
        if self.max_explanations is None:
            return 1 << 60
        return max(0, self.max_explanations - len(self.records))

    def add_batch(self, img: torch.Tensor, pending: Sequence) -> None:
        """img: (B, 3, H, W) validator batch in [0, 1]; pending: per image (preds, labels, tp (n, 10))."""
        jobs = []  # (row in img, pred, labels, tp, selected indices)
        n_records, n_missed = len(self.records), len(self.missed)
        for si, (pred, pb, tp) in enumerate(pending):
            self.images_seen += 1
            keep = int((pred["conf"] >= self.conf).sum())  # predictions are sorted by confidence
            take = min(keep, self.budget() - sum(len(j[4]) for j in jobs))
            if self.max_images is not None and self.images_explained + len(jobs) >= self.max_images:
                take = 0
            self._missed(pred, pb, tp, keep)
            if take > 0:
                jobs.append((si, pred, pb, tp, list(range(take))))
        if jobs:
            self.images_explained += len(jobs)
            adapter = self.exp.adapter
            rows = torch.tensor([j[0] for j in jobs], device=img.device)
            x = img.index_select(0, rows).to(adapter.device, adapter.dtype)
            result = explain_fixed(self.exp.runner, x, lambda head: [self._anchors(head, b, j) for b, j in enumerate(jobs)])
            for (si, pred, pb, tp, sel), dets, maps in zip(jobs, result.detections, result.heatmaps):
                self._record(pred, pb, tp, dets, maps)
        self.why_not.add_batch(img, pending, self.records[n_records:], self.missed[n_missed:])

    # -------------------------------------------------------------- internals
    def _anchors(self, head, b: int, job) -> list[Detection]:
        """The raw predictions (anchors) the validator's kept boxes came from, for batch row b (OBB: the
        rotated boxes compared by their corners, see `task_validators.rbox_distance`)."""
        _, pred, _, _, sel = job
        dev = head.boxes.device
        boxes = pred["bboxes"][sel].to(dev).float()
        cls = pred["cls"][sel].to(dev).long()
        conf = pred["conf"][sel].to(dev).float()
        rotated = self.exp.adapter.task == "obb"
        if rotated:
            box_err = rbox_distance(boxes, head.rboxes[b].float())  # (n, A) pixels
        else:
            box_err = (head.boxes[b].float()[None] - boxes[:, None]).abs().amax(-1)  # (n, A) pixels
        scores = head.logits[b].float().sigmoid()[:, cls].t()  # (n, A)
        cost = box_err + (scores - conf[:, None]).abs() * 100.0
        anchor = cost.argmin(1)
        hulls = rbox_hull(boxes) if rotated else boxes
        size = (hulls[:, 2:] - hulls[:, :2]).abs().amax(1)
        dets = []
        for j, a in enumerate(anchor.tolist()):
            if box_err[j, a] > ANCHOR_TOLERANCE_PX + ANCHOR_TOLERANCE_REL * float(size[j]):
                self.unmatched += 1
            dets.append(Detection(b, a, int(head.levels[a]), int(cls[j]), float(conf[j]),
                                  tuple(float(v) for v in hulls[j]),
                                  rbox=tuple(float(v) for v in boxes[j]) if rotated else None))
        return dets

    def _missed(self, pred, pb, tp, keep: int) -> None:
        """Ground truths no kept prediction matched (OBB: by rotated IoU; `box` is then the hull, `rbox` the
        rotated box, both in original-image pixels)."""
        gt_boxes, gt_cls = pb["bboxes"].cpu().float(), pb["cls"].cpu().long()
        if len(gt_cls) == 0:
            return
        rotated = self.exp.adapter.task == "obb"
        if rotated:
            matched = greedy_match(rotated_iou(pred["bboxes"][:keep].cpu(), gt_boxes), pred["cls"][:keep].cpu(), gt_cls)
        else:
            matched = match_ground_truth(pred["bboxes"][:keep].cpu(), pred["cls"][:keep].cpu(), gt_boxes, gt_cls)
        tp50 = torch.from_numpy(np.asarray(tp[:keep, 0], bool))
        self.label_mismatches += int(((matched >= 0) != tp50).sum())
        found = set(matched[tp50 & (matched >= 0)].tolist())
        for k in range(len(gt_cls)):
            if k not in found:
                rec = MapRecord(image=pb["im_file"], gt=k, cls=int(gt_cls[k]),
                                name=self.exp.names.get(int(gt_cls[k]), str(int(gt_cls[k]))))
                if rotated:
                    rec["box"] = _to_original(rbox_hull(gt_boxes[k:k + 1]), pb)[0].tolist()
                    rec["rbox"] = rbox_to_original(gt_boxes[k:k + 1], pb)[0].tolist()
                else:
                    rec["box"] = _to_original(gt_boxes[k:k + 1], pb)[0].tolist()
                self.missed.append(rec)

    def _record(self, pred, pb, tp, dets: list[Detection], maps: torch.Tensor) -> None:
        """One record per explained prediction. OBB: pointing / energy against the rotated ground-truth boxes;
        `box` / `gt_box` are their axis-aligned hulls and `rbox` / `gt_rbox` the rotated boxes (xywhr), all in
        original-image pixels."""
        n = len(dets)
        top, left, ch, cw = _content(pb, maps.shape[-2:])
        crop = maps[:, top:top + ch, left:left + cw].float().cpu()
        boxes, gt_boxes = pred["bboxes"][:n].cpu().float(), pb["bboxes"].cpu().float()
        gt_cls = pb["cls"].cpu().long()
        tp50 = torch.from_numpy(np.asarray(tp[:n, 0], bool))
        rotated = self.exp.adapter.task == "obb"
        if rotated:
            shift = torch.tensor([left, top, 0, 0, 0], dtype=torch.float32)
            loc: Localisation = localise_rotated(crop, boxes - shift, pred["cls"][:n].cpu(), gt_boxes - shift,
                                                 gt_cls, tp=tp50)
            hull, gt_hull = rbox_hull(boxes), rbox_hull(gt_boxes)
            orig_r, gt_orig_r = rbox_to_original(boxes, pb), rbox_to_original(gt_boxes, pb)
        else:
            shift = torch.tensor([left, top, left, top], dtype=torch.float32)
            loc = localise(crop, boxes - shift, pred["cls"][:n].cpu(), gt_boxes - shift, gt_cls, tp=tp50)
            hull, gt_hull = boxes, gt_boxes
        outside = context_outside(crop, loc.reference, loc.tp, gt_boxes - shift)  # context reliance of the TPs
        orig, gt_orig = _to_original(hull, pb), _to_original(gt_hull, pb)
        for k, d in enumerate(dets):
            ref = int(loc.reference[k])
            rec = MapRecord({
                "image": pb["im_file"], "index": k, "cls": d.cls, "name": self.exp.names.get(d.cls, str(d.cls)),
                "conf": d.conf, "box": orig[k].tolist(), "anchor": d.anchor, "level": d.level,
                "tp": bool(loc.tp[k]), "gt": ref, "gt_box": gt_orig[ref].tolist() if ref >= 0 else None,
                "pointing": _num(loc.pointing[k]), "energy": _num(loc.energy[k]),
                "energy_other": _num(loc.energy_other[k]), "outside": outside[k],
            })
            if rotated:
                rec["rbox"] = orig_r[k].tolist()
                rec["gt_rbox"] = gt_orig_r[ref].tolist() if ref >= 0 else None
            self.records.append(rec)
            self.worst.offer(rec, crop[k])
            if rec["outside"] is not None:
                self.worst.offer(rec, crop[k], kind="context")


def _num(v: torch.Tensor) -> float | None:
    v = float(v)
    return None if v != v else v


# ------------------------------------------------------------------ validate
def default_dataset(folder: Path, scenes: int = 32, seed: int = 7, task: str = "detect") -> Path:
    """Generate `scenes` labelled validation scenes (yolocam.scenes) in `folder`; returns data.yaml. For
    `task` segment, pose or obb, the scenes' labels of that task (`demo.task_labels`: pose has kpt_shape
    [5, 3]) under `folder/<task>/`."""
    if task == "detect":
        from ..demo.scenes import write_dataset

        return Path(write_dataset(folder, n_train=0, n_val=int(scenes), seed=seed))
    from ..demo.task_labels import write_task_dataset

    return Path(write_task_dataset(folder, task, n_train=0, n_val=int(scenes), seed=seed))


def validate(model=None, data=None, method: str | None = None, target="class", layers=DEFAULT_LAYERS,
             fuse: str = DEFAULT_FUSE, imgsz: int | None = None, conf: float = 0.25, iou: float = 0.7,
             device=None, max_images: int | None = None, max_explanations: int | None = None, out=None,
             scenes: int | None = None, batch: int = 16, val_conf: float | None = None, worst: int = 12,
             verbose: bool = True, drise: dict | None = None, exact: bool = False,
             _shard: bool = False) -> ValidationReport:
    """Run ultralytics' validator on `data` and explain every prediction it keeps with confidence >= `conf`.

    model: as `Explainer` (None = the bundled demo detector). data: dataset YAML; None generates
    `scenes` (default 32) labelled scenes. imgsz: None = the model's training size. iou: the validator's
    NMS IoU. val_conf: the validator's own confidence threshold (None = ultralytics' default), so its
    metrics equal `model.val(data=..., imgsz=..., batch=..., conf=val_conf, iou=iou)`. out: folder for
    metrics.csv, predictions.csv, metrics.json, worst/ (HTML gallery) and the validator's own files.
    drise: for `method="drise"`, Explainer's masks, cell, keep, seed and mask_batch (a dict). exact: as
    `Explainer(exact=True)` (on a CPU, each box replayed over the whole image: `outside` then sees all context).
    A `data` whose `names` has another number of classes than the model is refused; images ultralytics' dataset
    scan leaves out (an unreadable image, a malformed label line) are counted in `report.skipped` and said in one
    warning (`_shard`: a Ray shard, whose driver says it once for the whole dataset).
    Returns a `ValidationReport`.
    """
    for name, v in (("max_images", max_images), ("max_explanations", max_explanations)):
        if v is not None and (not isinstance(v, int) or v < 0):
            raise YolocamError(f"{name}: expected a non-negative int or None, got {v!r}")
    info = check_dataset(data) if data is not None else None
    wrapper, model, train_imgsz = resolve_model(model)
    _refuse_classifier(wrapper.model if wrapper is not None else model)
    drise = dict(drise or {})  # method="drise": Explainer's masks, cell, keep, seed, mask_batch
    exp = Explainer(model, method=method, target=target, layers=layers, fuse=fuse,
                    imgsz=train_imgsz if imgsz is None else imgsz, device=device, exact=exact, **drise)
    task = getattr(exp.adapter, "task", "detect")
    if info is not None:
        val_images(info, data)  # no image at all: one line before any work
    data_names = check_names(info["names"], exp.names, data) if info is not None else None
    validator_cls = explaining_validator(task)  # the task's ultralytics validator, recording for the collector
    if data is None and task == "pose":
        from ..demo.task_labels import KEYPOINT_NAMES

        check_pose_dataset(exp.adapter.head.kpt_shape, (len(KEYPOINT_NAMES), 3))
    imgsz = exp.imgsz  # rounded up to the stride, as the validator does
    tmp = None if out is not None else Path(tempfile.mkdtemp(prefix="yolocam_val_"))
    root = Path(out) if out is not None else tmp
    try:
        root.mkdir(parents=True, exist_ok=True)
        if data is None:
            data = default_dataset(root / "data", scenes or 32, task=task)
        collector = Collector(exp, conf, max_images, max_explanations, worst, rebuild=lambda end2end: Explainer(
            model, method=method, target=target, layers=layers, fuse=fuse, imgsz=imgsz, device=device, end2end=end2end,
            exact=exact, **drise))
        args = dict(data=str(data), imgsz=imgsz, batch=batch, iou=iou, plots=False, project=str(root),
                    name="val", exist_ok=True, verbose=verbose)
        if val_conf is not None:
            args["conf"] = val_conf
        if device is not None:
            args["device"] = str(device)
        holder = {}

        def factory(args=None, _callbacks=None):
            holder["v"] = validator_cls(args=args, _callbacks=_callbacks, collector=collector)
            return holder["v"]

        if wrapper is not None:
            wrapper.val(validator=factory, **args)
        else:
            factory(args={"task": task, "rect": True, "mode": "val", **args})(model=exp.adapter.module)
        report = build_report(holder["v"], collector, exp.names, settings={
            "model": exp.adapter.name, "task": task, "data": str(data), "method": exp.method.name,
            "target": exp.target.name,
            "layers": exp.layers_spec, "fuse": fuse, "imgsz": imgsz, "conf": conf, "iou": iou,
            "val_conf": holder["v"].args.conf, "batch": batch,
            "head": collector.exp.adapter.head_kind,
            "strides": [int(v) for v in getattr(exp.adapter, "strides", ())]})  # the gallery names levels by stride
        if data_names is not None:
            report.settings["data_names"] = data_names  # matched to the model's classes by index
        report.stats = getattr(holder["v"], "raw_stats", None)
        if not _shard:
            warn_about_dataset(report, exp.names)
        if out is not None:
            report.save(root)
        if verbose:
            print(printable(report.format(), keep="\n"))
        return report
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def warn_about_dataset(report: ValidationReport, model_names: dict) -> None:
    """After a validation: one warning when the dataset names other classes than the model, one when
    ultralytics' dataset scan left images out."""
    for line in (names_warning(report.settings.get("data_names"), model_names, report.settings.get("data")),
                 skipped_warning(report.skipped, int(report.counts.get("images", 0)))):
        if line:
            log.warning("%s", line)


def model_task(model, with_names: bool = False):
    """The task (detect, segment, pose, obb) of `model` (as `validate` takes it; None = the demo detector);
    with_names: (task, the model's class names)."""
    from ..model.adapter import ModelAdapter

    wrapper, model, _ = resolve_model(model)
    _refuse_classifier(wrapper.model if wrapper is not None else model)
    adapter = ModelAdapter(model)
    explaining_validator(adapter.task)  # an unsupported task: one clear line
    return (adapter.task, adapter.names) if with_names else adapter.task


def _refuse_classifier(module) -> None:
    """A classification model (a Classify head) has no boxes to explain against: one clear line."""
    layers = getattr(module, "model", None)
    head = layers[-1] if isinstance(layers, torch.nn.Sequential) and len(layers) else None
    if head is not None and "Classify" in type(head).__name__:
        raise YolocamError(f"validation of classification models is not supported: expected a detect, segment, "
                           f"pose or obb model, got one with a {type(head).__name__} head")


def check_dataset(data) -> dict:
    """ultralytics' own check of a detection dataset YAML (nothing downloaded); any problem as a YolocamError."""
    from ultralytics.data.utils import check_det_dataset

    if not isinstance(data, (str, Path)):
        raise YolocamError(f"data: expected the path of a dataset YAML, got {type(data).__name__}")
    if not Path(data).is_file():
        raise YolocamError(f"data: dataset YAML not found: {data}")
    try:
        return check_det_dataset(str(data), autodownload=False)
    except Exception as exc:  # noqa: BLE001 - ultralytics raises SyntaxError, ValueError, FileNotFoundError, ...
        text = " ".join(str(exc).replace("❌", "").split())
        raise YolocamError(f"data: unusable dataset YAML {data}: {text}") from None


# ------------------------------------------------------------------------ CLI
def _layers_arg(spec):
    if isinstance(spec, str) and spec.replace(",", "").replace(" ", "").isdigit():
        return [int(v) for v in spec.split(",") if v.strip()]
    return spec


def main_val(args) -> int:
    """`yolocam val`: validate and explain, or (`--compare-methods [LIST]`) compare methods on generated scenes.

    `args` (argparse Namespace): model, data, method, target, layers, fuse, imgsz, conf, iou, device, out,
    max_images, max_explanations, compare_methods (None, True/"all", or a list of names), scenes.
    Results go to `out` (default: a new runs/yolocam/valN). Returns 0, or 2 on a `YolocamError`.
    """
    from ..output.files import increment_dir

    get = lambda name, default=None: default if getattr(args, name, None) is None else getattr(args, name)  # noqa: E731
    out = Path(get("out") or increment_dir(Path("runs") / "yolocam" / "val"))
    try:
        common = dict(layers=_layers_arg(get("layers", DEFAULT_LAYERS)), fuse=get("fuse", DEFAULT_FUSE),
                      imgsz=get("imgsz"), device=get("device"))
        drise = {k: get(a) for k, a in (("masks", "masks"), ("cell", "mask_cell"), ("keep", "mask_keep"),
                                         ("seed", "mask_seed"), ("mask_batch", "mask_batch")) if get(a) is not None}
        methods = get("compare_methods")
        if methods is not None and methods is not False:
            from .compare import compare_methods, format_comparison, save_comparison

            names = None if methods is True or methods == "all" else list(methods)
            rows = compare_methods(get("model"), scenes=get("scenes", 16), target=get("target", "class"),
                                   conf=get("conf", 0.25), iou=get("iou", 0.7), methods=names,
                                   stability=bool(get("stability", False)),  # --stability: JPEG-90 / shift columns
                                   drise={("batch" if k == "mask_batch" else k): v for k, v in drise.items()}, **common)
            print(format_comparison(rows))
            print(f"saved to {printable(save_comparison(rows, out))}")
            return 0
        validate(get("model"), data=get("data"), method=get("method"), target=get("target", "class"),
                 conf=get("conf", 0.25), iou=get("iou", 0.7), max_images=get("max_images"),
                 max_explanations=get("max_explanations"), out=out, scenes=get("scenes"), drise=drise,
                 exact=bool(get("exact", False)), **common)
        print(f"saved to {printable(out)} (metrics.csv, metrics.json, predictions.csv, worst/index.html)")
        return 0
    except YolocamError as exc:
        print(f"yolocam val: error: {printable(' '.join(str(exc).split()))}", file=sys.stderr)
        return 2
