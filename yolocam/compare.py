"""Reports of explanation metrics: the validation report (tables, files, worst-case gallery) and
every CAM method side by side on generated scenes (how the defaults are chosen).

Method comparison: for each scene (`yolocam.scenes.make_scene`, test-split seeds) the detector runs
once; every method then explains the same detections. Per method: pointing game, energy-in-box and
energy on the other objects (true positives against their matched ground truth), deletion and
insertion AUC (the `faithful` highest-confidence detections per scene), and the model-randomisation
rank correlations on the whole map and inside the box (all detections; the same re-initialised copy
of the model for every method; lower is better).
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch

from .detections import select_detections
from .engine import CamEngine
from .explainer import DEFAULT_FUSE, DEFAULT_LAYERS, Explainer
from .export import ExportWriter, atomic_write_bytes, prepare_out_dir
from .fusion import normalise, resize_maps
from .methods import get_method, list_methods
from .metrics import box_spearman, deletion_insertion, explain_fixed, localise, randomised_copy, spearman
from .results import DetectionExplanation, ImageExplanation

COLUMNS = ("method", "detections", "tp", "pointing", "energy", "energy_other", "deletion_auc", "insertion_auc",
           "randomisation", "randomisation_box", "seconds")
HEADER = ("Method", "Dets", "TP", "PG", "EiB", "EoO", "Del-AUC", "Ins-AUC", "Rand-rho", "Rand-box", "Seconds")


def format_rows(header: Sequence[str], rows: list[dict], keys: Sequence[str]) -> str:
    """Rows printed like ultralytics' tables: a 22-wide label column then 11-wide columns."""
    lines = [("%22s" + "%11s" * (len(header) - 1)) % tuple(header)]
    for r in rows:
        cells = ["%11i" % r[k] if isinstance(r[k], (int, np.integer)) else "%11.3g" % r[k] for k in keys[1:]]
        lines.append("%22s" % r[keys[0]] + "".join(cells))
    return "\n".join(lines)


def csv_bytes(rows: list[dict], keys: Sequence[str]) -> bytes:
    """CSV text of `rows` restricted to `keys` (lists written as JSON)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(keys), extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: json.dumps(r[k]) if isinstance(r[k], (list, tuple)) else r[k] for k in keys})
    return buf.getvalue().encode()


# ------------------------------------------------------------------- report
TABLE_COLUMNS = ("class", "instances", "explained", "tp", "tp_pointing", "tp_energy", "tp_energy_other",
                 "fp", "fp_pointing", "fp_energy", "fp_energy_other", "missed")
_HEADER = ("Class", "Instances", "Explained", "TP", "TP-PG", "TP-EiB", "TP-EoO", "FP", "FP-PG", "FP-EiB",
           "FP-EoO", "Missed")


class WorstCases:
    """The `k` highest-confidence false positives and the `k` true positives of lowest energy-in-box."""

    def __init__(self, k: int = 12):
        self.k, self.fp, self.tp = int(k), [], []

    def offer(self, rec: dict, heat: torch.Tensor) -> None:
        """rec: a prediction record; heat: its (h, w) map on the unpadded letterboxed image."""
        if self.k <= 0 or (rec["tp"] and rec["energy"] is None):
            return
        bucket = self.tp if rec["tp"] else self.fp
        bucket.append((rec, heat.half().clone()))
        bucket.sort(key=(lambda it: it[0]["energy"]) if rec["tp"] else (lambda it: -it[0]["conf"]))
        del bucket[self.k:]

    def write(self, folder: Path, meta: dict) -> list[dict]:
        """An ExportWriter folder (with index.html) of the cases, the reference box drawn in green."""
        cases = []
        with ExportWriter(folder, meta=meta, html=True) as writer:
            for kind, bucket in (("false_positive", self.fp), ("true_positive", self.tp)):
                for rank, (rec, heat) in enumerate(bucket):
                    image = cv2.imread(rec["image"])
                    if image is None:
                        continue
                    if rec["gt_box"] is not None:
                        x1, y1, x2, y2 = (int(round(v)) for v in rec["gt_box"])
                        cv2.rectangle(image, (x1, y1), (x2, y2), (0, 255, 0), 2)
                    heat = normalise(resize_maps(heat.float()[None], image.shape[:2]))[0].numpy()
                    det = DetectionExplanation(rec["box"], rec["cls"], rec["name"], rec["conf"], rec["anchor"],
                                               rec["level"], heat.astype(np.float32))
                    entry = writer.add(ImageExplanation(rec["image"], image, [det], meta=meta))
                    if entry:  # the gallery card says which case it is (rewritten to the manifest at the end)
                        entry["detections"][0]["case"] = _case_label(kind, rank, rec)
                    cases.append({"kind": kind, "rank": rank, "stem": entry["stem"] if entry else None,
                                  **{k: rec[k] for k in ("image", "name", "conf", "box", "gt_box", "energy",
                                                         "pointing", "energy_other")}})
        atomic_write_bytes(folder / "cases.json", json.dumps(cases, indent=1).encode())
        return cases


def _case_label(kind: str, rank: int, rec: dict) -> str:
    """One line for a worst-case card: which list it is on, its rank, and the number that put it there."""
    energy = "-" if rec["energy"] is None else f"{rec['energy']:.2f}"
    if kind == "false_positive":
        return f"false positive #{rank + 1} (by confidence): energy in nearest ground-truth box {energy}"
    return f"true positive #{rank + 1} (lowest energy in box): {energy}"


def _mean(values) -> float:
    """Mean of the values that are not None or NaN (NaN when there are none)."""
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(vals)) if vals else float("nan")


def class_table(records: list[dict], missed: list[dict], names: dict, instances: dict) -> list[dict]:
    """Per-class rows (then `all`) of the localisation metrics; see TABLE_COLUMNS."""
    def row(label, recs, miss, inst):
        tp = [r for r in recs if r["tp"]]
        fp = [r for r in recs if not r["tp"]]
        return {"class": label, "instances": inst, "explained": len(recs), "tp": len(tp),
                "tp_pointing": _mean(r["pointing"] for r in tp), "tp_energy": _mean(r["energy"] for r in tp),
                "tp_energy_other": _mean(r["energy_other"] for r in tp), "fp": len(fp),
                "fp_pointing": _mean(r["pointing"] for r in fp), "fp_energy": _mean(r["energy"] for r in fp),
                "fp_energy_other": _mean(r["energy_other"] for r in fp), "missed": len(miss)}

    rows = []
    for c, name in sorted(names.items()):
        recs = [r for r in records if r["cls"] == c]
        miss = [m for m in missed if m["cls"] == c]
        if recs or miss or instances.get(c, 0):
            rows.append(row(name, recs, miss, int(instances.get(c, 0))))
    rows.append(row("all", records, missed, int(sum(instances.values()))))
    return rows


@dataclass
class ValidationReport:
    """metrics: ultralytics' results_dict; classes: its per-class P/R/mAP rows; table: the localisation
    table (TABLE_COLUMNS, per class then `all`); predictions: one record per explained prediction;
    missed: ground truths no prediction with confidence >= conf matched; counts: images seen/explained
    and consistency counters; worst: the gallery's cases (after `save`)."""

    metrics: dict
    classes: list[dict]
    table: list[dict]
    predictions: list[dict]
    missed: list[dict]
    settings: dict
    counts: dict
    worst_cases: WorstCases | None = None
    worst: list[dict] = field(default_factory=list)
    out: Path | None = None

    def format(self) -> str:
        """ultralytics' metrics table, then the localisation table."""
        keys = ("class", "images", "instances", "precision", "recall", "map50", "map50_95")
        m = self.metrics
        allrow = {"class": "all", "images": self.counts["images"],
                  "instances": sum(r["instances"] for r in self.table if r["class"] == "all"),
                  "precision": m.get("metrics/precision(B)", 0.0), "recall": m.get("metrics/recall(B)", 0.0),
                  "map50": m.get("metrics/mAP50(B)", 0.0), "map50_95": m.get("metrics/mAP50-95(B)", 0.0)}
        head = ("Class", "Images", "Instances", "Box(P", "R", "mAP50", "mAP50-95)")
        s = self.settings
        return "\n".join([
            format_rows(head, [allrow, *self.classes], keys), "",
            f"explanations: method={s['method']} target={s['target']} layers={s['layers']} fuse={s['fuse']} "
            f"conf>={s['conf']} head={s.get('head', '')}",
            "PG pointing game, EiB energy in the matched (TP) / nearest (FP) ground-truth box, EoO energy on the "
            "other objects; Missed: ground truths no kept prediction matched, over every validated image",
            format_rows(_HEADER, self.table, TABLE_COLUMNS)])

    def to_dict(self) -> dict:
        return {"settings": self.settings, "metrics": self.metrics, "classes": self.classes, "table": self.table,
                "counts": self.counts, "missed": self.missed, "predictions": self.predictions, "worst": self.worst}

    def save(self, out) -> Path:
        """Write metrics.csv, predictions.csv, metrics.json and worst/ into `out`."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        if self.worst_cases is not None and (self.worst_cases.fp or self.worst_cases.tp):
            meta = {k: self.settings[k] for k in ("model", "method", "target", "layers")}
            self.worst = self.worst_cases.write(out / "worst", meta)
        atomic_write_bytes(out / "metrics.csv", csv_bytes(self.table, TABLE_COLUMNS))
        pkeys = ("image", "index", "cls", "name", "conf", "box", "tp", "gt", "gt_box", "pointing", "energy",
                 "energy_other", "anchor", "level")
        atomic_write_bytes(out / "predictions.csv", csv_bytes(self.predictions, pkeys))
        atomic_write_bytes(out / "metrics.json", json.dumps(self.to_dict(), indent=1, default=float).encode())
        self.out = out
        return out


def build_report(validator, collector, names: dict, settings: dict) -> ValidationReport:
    """Collect the validator's own metrics and the collector's records into a report."""
    m = validator.metrics
    classes, instances = [], {}
    nt = getattr(m, "nt_per_class", None)
    for c in range(len(names)):
        instances[c] = int(nt[c]) if nt is not None and c < len(nt) else 0
    for i, c in enumerate(getattr(m, "ap_class_index", [])):
        p, r, map50, map5095 = (float(v) for v in m.class_result(i))
        classes.append({"class": names.get(int(c), str(c)), "images": int(m.nt_per_image[c]),
                        "instances": instances.get(int(c), 0), "precision": p, "recall": r, "map50": map50,
                        "map50_95": map5095})
    counts = {"images": int(validator.seen), "images_explained": collector.images_explained,
              "explanations": len(collector.records), "unmatched_predictions": collector.unmatched,
              "label_mismatches": collector.label_mismatches}
    table = class_table(collector.records, collector.missed, names, instances)
    metrics = {k: float(v) for k, v in m.results_dict.items()}
    return ValidationReport(metrics, classes, table, collector.records, collector.missed, settings, counts,
                            worst_cases=collector.worst)


# -------------------------------------------------------- method comparison
def _unique_methods(methods) -> list[str]:
    names, seen = [], set()
    for name in methods or list_methods():
        key = get_method(name).name
        if key not in seen:
            seen.add(key)
            names.append(name)
    return names


def compare_methods(model=None, scenes: int = 16, imgsz: int | None = None, layers=DEFAULT_LAYERS,
                    fuse: str = DEFAULT_FUSE, target="class", conf: float = 0.25, iou: float = 0.7, device=None,
                    methods: Sequence[str] | None = None, steps: int = 16, faithful: int = 2,
                    seed: int = 0) -> list[dict]:
    """One row per method (see COLUMNS) measured on `scenes` generated scenes.

    model: as `Explainer` (None = bundled demo detector); imgsz: None = the model's training size (else 640);
    steps: deletion/insertion steps; faithful: detections per scene given deletion/insertion curves.
    """
    from .scenes import make_scene, scene_seed

    from .validation import resolve_model

    names = _unique_methods(methods)
    _, model, train_imgsz = resolve_model(model)
    exp = Explainer(model, method=names[0], target=target, layers=layers, fuse=fuse,
                    imgsz=train_imgsz if imgsz is None else int(imgsz), device=device)
    adapter = exp.adapter
    engines = {m: CamEngine(adapter, get_method(m), exp.target, exp.layers, fuse=fuse) for m in names}
    rand = randomised_copy(engines[names[0]], seed=seed)
    rand_engines = {m: CamEngine(rand.adapter, get_method(m), exp.target, rand.layers, fuse=fuse) for m in names}
    acc = {m: {"pointing": [], "energy": [], "energy_other": [], "deletion_auc": [], "insertion_auc": [],
               "randomisation": [], "randomisation_box": [], "seconds": 0.0, "detections": 0, "tp": 0} for m in names}
    for i in range(int(scenes)):
        scene = make_scene(scene_seed(seed, "test", i))
        x, (lb,) = adapter.preprocess([scene.image], exp.imgsz)
        with adapter.explaining(), torch.no_grad():
            _, head = adapter.forward(x)
        dets = select_detections(head, adapter.end2end, conf, iou)
        if not dets[0]:
            continue
        gx, gy = lb.gain_xy
        gt = torch.as_tensor(scene.boxes).float() * torch.tensor([gx, gy, gx, gy])
        boxes = torch.tensor([d.box for d in dets[0]]) - torch.tensor([lb.left, lb.top, lb.left, lb.top])
        classes = torch.tensor([d.cls for d in dets[0]])
        w, h = lb.new_unpad
        for m in names:
            a = acc[m]
            t0 = time.perf_counter()
            maps = explain_fixed(engines[m], x, lambda head: dets).heatmaps[0]
            loc = localise(maps[:, lb.top:lb.top + h, lb.left:lb.left + w], boxes, classes, gt,
                           torch.as_tensor(scene.classes))
            for key in ("pointing", "energy", "energy_other"):
                a[key] += getattr(loc, key)[loc.tp].tolist()
            a["tp"] += int(loc.tp.sum())
            a["detections"] += len(dets[0])
            for d, heat in list(zip(dets[0], maps))[:faithful]:
                dele, ins = deletion_insertion(adapter, x, heat, d.box, d.cls, steps=steps)
                a["deletion_auc"].append(dele.auc)
                a["insertion_auc"].append(ins.auc)
            after = explain_fixed(rand_engines[m], x, lambda head: dets).heatmaps[0]
            a["randomisation"] += [spearman(u, v) for u, v in zip(maps.cpu(), after.cpu())]
            a["randomisation_box"] += box_spearman(maps.cpu(), after.cpu(), dets[0])
            a["seconds"] += time.perf_counter() - t0
    rows = []
    for m in names:
        a = acc[m]
        rows.append({"method": m, "detections": a["detections"], "tp": a["tp"], "seconds": round(a["seconds"], 2),
                     **{k: _mean(a[k]) for k in ("pointing", "energy", "energy_other", "deletion_auc",
                                                  "insertion_auc", "randomisation", "randomisation_box")}})
    return rows


def format_comparison(rows: list[dict]) -> str:
    """The comparison as an ultralytics-style table (PG/EiB/EoO on true positives; higher is better
    except EoO, Del-AUC and Rand-rho)."""
    return format_rows(HEADER, rows, COLUMNS)


def save_comparison(rows: list[dict], out) -> Path:
    """Write compare_methods.csv and compare_methods.json into `out`."""
    out = prepare_out_dir(out)
    atomic_write_bytes(out / "compare_methods.csv", csv_bytes(rows, COLUMNS))
    atomic_write_bytes(out / "compare_methods.json", json.dumps(rows, indent=1).encode())
    return out
