"""The validation report: per-class tables of explanation metrics, its files, and the worst cases.

`validation.py` collects one record per explained prediction; this module turns them into
tables (printed and CSV/JSON), plots (`plots.py`: per class, energy in box against confidence,
true against false positives) and a gallery of the highest-confidence false positives and the
true positives with the least energy in their box.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch

from ..cam.fusion import normalise, resize_maps
from ..output.export import ExportWriter
from ..output.files import atomic_write_bytes
from ..output.paths import checked_dir
from ..output.results import DetectionExplanation, ImageExplanation
from .dataset_scan import NO_SKIPS
from .task_validators import corners


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


# The ground truth in a worst-case picture: white on black, unlike any class colour on any background.
GT_LINES = (((0, 0, 0), 4), ((255, 255, 255), 2))


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
        """An ExportWriter folder (with index.html) of the cases, the reference box drawn black and white."""
        cases = []
        # crops: each case's card is its box zoomed with context (the ground truth drawn black and white), the full
        # image a click away, as in the explain gallery
        with ExportWriter(folder, meta=meta, html=True, crops=True) as writer:
            for kind, bucket in (("false_positive", self.fp), ("true_positive", self.tp)):
                for rank, (rec, heat) in enumerate(bucket):
                    image = cv2.imread(rec["image"])
                    if image is None:
                        continue
                    if rec.get("gt_rbox") is not None:  # OBB: the rotated ground-truth box
                        poly = corners(torch.tensor(rec["gt_rbox"], dtype=torch.float64)).numpy()
                        for colour, width in GT_LINES:
                            cv2.polylines(image, [np.round(poly).astype(np.int32)], True, colour, width)
                    elif rec["gt_box"] is not None:
                        x1, y1, x2, y2 = (int(round(v)) for v in rec["gt_box"])
                        for colour, width in GT_LINES:
                            cv2.rectangle(image, (x1, y1), (x2, y2), colour, width)
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
        return (f"false positive #{rank + 1} (by confidence): energy in nearest ground-truth box {energy}; "
                "black and white: that ground truth")
    return f"true positive #{rank + 1} (lowest energy in box): {energy}; black and white: its ground truth"


def mean_of(values) -> float:
    """Mean of the values that are not None or NaN (NaN when there are none)."""
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(vals)) if vals else float("nan")


def class_table(records: list[dict], missed: list[dict], names: dict, instances: dict) -> list[dict]:
    """Per-class rows (then `all`) of the localisation metrics; see TABLE_COLUMNS."""
    def row(label, recs, miss, inst):
        tp = [r for r in recs if r["tp"]]
        fp = [r for r in recs if not r["tp"]]
        return {"class": label, "instances": inst, "explained": len(recs), "tp": len(tp),
                "tp_pointing": mean_of(r["pointing"] for r in tp), "tp_energy": mean_of(r["energy"] for r in tp),
                "tp_energy_other": mean_of(r["energy_other"] for r in tp), "fp": len(fp),
                "fp_pointing": mean_of(r["pointing"] for r in fp), "fp_energy": mean_of(r["energy"] for r in fp),
                "fp_energy_other": mean_of(r["energy_other"] for r in fp), "missed": len(miss)}

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
    and consistency counters; worst: the gallery's cases (after `save`); stats: ultralytics' raw
    per-prediction statistics (tp, conf, pred_cls, target_cls, target_img); skipped: images (and their label
    lines) ultralytics' dataset scan left out, with the first reason (`dataset_scan`)."""

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
    stats: dict | None = None  # the validator's per-prediction statistics (merging shards; not saved)
    skipped: dict = field(default_factory=lambda: dict(NO_SKIPS))  # images ultralytics' dataset scan left out

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
                "counts": self.counts, "skipped": self.skipped, "missed": self.missed, "predictions": self.predictions,
                "worst": self.worst}

    def save(self, out) -> Path:
        """Write metrics.csv, predictions.csv, metrics.json, worst/ and the plots (per_class.png,
        energy_vs_conf.png, tp_vs_fp.png; see `plots.py`) into `out`."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        if self.worst_cases is not None and (self.worst_cases.fp or self.worst_cases.tp):
            meta = {k: self.settings[k] for k in ("model", "method", "target", "layers")}
            self.worst = self.worst_cases.write(checked_dir(out, "worst"), meta)  # never through a link
        atomic_write_bytes(out / "metrics.csv", csv_bytes(self.table, TABLE_COLUMNS))
        pkeys = ("image", "index", "cls", "name", "conf", "box", "tp", "gt", "gt_box", "pointing", "energy",
                 "energy_other", "anchor", "level")
        if self.predictions and all("rbox" in r for r in self.predictions):  # OBB: the rotated boxes too
            pkeys += ("rbox", "gt_rbox")
        atomic_write_bytes(out / "predictions.csv", csv_bytes(self.predictions, pkeys))
        atomic_write_bytes(out / "metrics.json", json.dumps(self.to_dict(), indent=1, default=float).encode())
        from .plots import report_pngs

        for name, data in report_pngs(self.table, self.predictions).items():
            atomic_write_bytes(out / name, data)
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
        p, r, map50, map5095 = (float(v) for v in m.class_result(i)[:4])  # the box columns (seg / pose add more)
        classes.append({"class": names.get(int(c), str(c)), "images": int(m.nt_per_image[c]),
                        "instances": instances.get(int(c), 0), "precision": p, "recall": r, "map50": map50,
                        "map50_95": map5095})
    counts = {"images": int(validator.seen), "images_explained": collector.images_explained,
              "explanations": len(collector.records), "unmatched_predictions": collector.unmatched,
              "label_mismatches": collector.label_mismatches}
    table = class_table(collector.records, collector.missed, names, instances)
    metrics = {k: float(v) for k, v in m.results_dict.items()}
    return ValidationReport(metrics, classes, table, collector.records, collector.missed, settings, counts,
                            worst_cases=collector.worst, skipped=dict(getattr(validator, "skipped", None) or NO_SKIPS))
