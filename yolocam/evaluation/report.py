"""The validation report: per-class tables of explanation metrics, its files, and the worst cases.

`validation.py` collects one record per explained prediction; this module turns them into
tables (printed and CSV/JSON), plots (`plots.py`: per class, energy in box against confidence,
true against false positives) and a gallery of the highest-confidence false positives, the
true positives with the least energy in their box, and the why-not sections (`why_not.py`): the missed
ground truths, the confusions and the true positives that rely most on context.
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
from .why_not import confusion_table, missed_npz


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
        writer.writerow({k: json.dumps(v) if isinstance(v := r.get(k), (list, tuple)) else v for k in keys})
    return buf.getvalue().encode()


# ------------------------------------------------------------------- report
TABLE_COLUMNS = ("class", "instances", "explained", "tp", "tp_pointing", "tp_energy", "tp_energy_other",
                 "fp", "fp_pointing", "fp_energy", "fp_energy_other", "missed",
                 "missed_pointing", "missed_energy", "confused", "confused_pointing", "confused_energy", "tp_outside")
_SPLIT = TABLE_COLUMNS.index("missed") + 1  # printed as two tables: localisation, then why not
_HEADER = ("Class", "Instances", "Explained", "TP", "TP-PG", "TP-EiB", "TP-EoO", "FP", "FP-PG", "FP-EiB",
           "FP-EoO", "Missed")
_WHY_HEADER = ("Class", "Missed", "Miss-PG", "Miss-EiB", "Confused", "Conf-PG", "Conf-EiB", "TP-Out")
_WHY_KEYS = ("class", "missed", *TABLE_COLUMNS[_SPLIT:])
_CONFUSION_HEADER = ("True -> detected", "Count", "PG", "EiB")


# The ground truth in a worst-case picture: white on black, unlike any class colour on any background.
GT_LINES = (((0, 0, 0), 4), ((255, 255, 255), 2))
GT_LEGEND = ("the box in the class's colour: the prediction, labelled with its confidence; the black-and-white "
             "rectangle: the ground truth; a click on a card: the whole image")


# The gallery's sections: kind -> (heading, rank key: lowest first)
SECTIONS = {
    "false_positive": ("False positives, most confident first", lambda r: -r["conf"]),
    "true_positive": ("True positives with the least energy in their box", lambda r: r["energy"]),
    "missed": ("Missed ground truths, least energy in their box first (the best-overlapping prediction, "
               "explained with the true class's logit)", lambda r: r["energy"]),
    "confusion": ("Confusions, most confident first (contrast: the detected class's logit minus the true "
                  "class's)", lambda r: -r["conf"]),
    "context": ("True positives relying most on context (share of the heat outside the box grown by 10 %)",
                lambda r: -r["outside"]),
}


class WorstCases:
    """The `k` highest-confidence false positives, the `k` true positives of lowest energy-in-box, and the why-not
    cases: the `k` missed ground truths of lowest energy in their box, the `k` most confident confusions (their
    contrast maps) and the `k` true positives of highest `outside`."""

    def __init__(self, k: int = 12):
        self.k, self.fp, self.tp = int(k), [], []
        self.missed, self.confused, self.context = [], [], []

    def bucket(self, kind: str) -> list:
        return {"false_positive": self.fp, "true_positive": self.tp, "missed": self.missed,
                "confusion": self.confused, "context": self.context}[kind]

    def offer(self, rec: dict, heat: torch.Tensor, kind: str | None = None) -> None:
        """rec: a prediction (or missed) record; heat: its (h, w) map on the unpadded letterboxed image. kind:
        None (a false or true positive, by `rec["tp"]`) or one of `SECTIONS`' why-not kinds."""
        kind = kind or ("true_positive" if rec["tp"] else "false_positive")
        key = SECTIONS[kind][1]
        if self.k <= 0 or (kind in ("true_positive", "missed") and rec.get("energy") is None) or \
                (kind == "context" and rec.get("outside") is None):
            return
        bucket = self.bucket(kind)
        bucket.append((rec, heat.half().clone()))
        bucket.sort(key=lambda it: key(it[0]))
        del bucket[self.k:]

    def __len__(self) -> int:
        return sum(len(self.bucket(kind)) for kind in SECTIONS)

    def write(self, folder: Path, meta: dict) -> list[dict]:
        """An ExportWriter folder (with index.html) of the cases, the reference box drawn black and white."""
        cases, firsts = [], {}
        # crops: each case's card is its box zoomed with context (the ground truth drawn black and white), the full
        # image a click away, as in the explain gallery
        with ExportWriter(folder, meta=meta, html=True, crops=True) as writer:
            for kind in SECTIONS:
                for rank, (rec, heat) in enumerate(self.bucket(kind)):
                    rec = _card_record(kind, rec)
                    image = None if rec is None else cv2.imread(rec["image"])
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
                        firsts.setdefault(kind, (len(writer.manifest["images"]) - 1, len(self.bucket(kind))))
                    cases.append({"kind": kind, "rank": rank, "stem": entry["stem"] if entry else None,
                                  **{k: rec.get(k) for k in ("image", "name", "conf", "box", "gt_box", "energy",
                                                             "pointing", "energy_other", "outside")}})
        atomic_write_bytes(folder / "cases.json", json.dumps(cases, indent=1).encode())
        _section_headings(folder / "index.html", firsts)
        return cases


def _card_record(kind: str, rec: dict) -> dict | None:
    """The record a card draws: a missed ground truth as its best-overlapping prediction's box with the ground
    truth drawn; a confusion with the true class's box drawn; else the record itself."""
    if kind == "missed":
        if rec.get("pred_box") is None:
            return None
        return {**rec, "box": rec["pred_box"], "gt_box": rec["box"], "gt_rbox": rec.get("rbox"), "energy_other": None}
    if kind == "confusion":
        return {**rec, "gt_box": rec["confused_box"], "gt_rbox": None, "energy": rec.get("contrast_energy"),
                "pointing": rec.get("contrast_pointing")}
    return rec


def _section_headings(index: Path, firsts: dict) -> None:
    """A heading before the first card of each kind in the gallery page (its sections are the cases, in order)."""
    if not index.is_file() or not firsts:
        return
    html = index.read_text(encoding="utf-8")
    for kind, (i, n) in firsts.items():
        anchor = f'<section class="image" id="img-{i}"'
        head = (f'<section class="summary kind" id="kind-{kind}" data-kind="{kind}"><h2>{SECTIONS[kind][0]} '
                f'({n})</h2><p class="sub">{GT_LEGEND}</p></section>')
        html = html.replace(anchor, head + anchor, 1)
    atomic_write_bytes(index, html.encode("utf-8"))


def _case_label(kind: str, rank: int, rec: dict) -> str:
    """One line for a worst-case card: which list it is on, its rank, and the number that put it there."""
    energy = "-" if rec.get("energy") is None else f"{rec['energy']:.2f}"
    if kind == "missed":
        return (f"missed #{rank + 1} (lowest energy in its box): the best-overlapping prediction (IoU "
                f"{rec['iou']:.2f}, {rec['name']} score {rec['conf']:.3f}) explained with the {rec['name']} logit; "
                f"energy in the ground truth {energy}; black and white: the missed ground truth")
    if kind == "confusion":
        return (f"confusion #{rank + 1}: detected {rec['name']}, ground truth {rec['confused_with']} (IoU "
                f"{rec['confused_iou']:.2f}); map: contrast:{rec['confused_with']}; energy in that ground truth "
                f"{energy}; black and white: that ground truth")
    if kind == "context":
        return (f"context #{rank + 1} (most heat outside the box): {rec['outside']:.2f} of the heat outside its "
                "ground truth grown by 10 %; black and white: its ground truth")
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
        confused = [r for r in fp if r.get("confused_with") is not None]
        return {"class": label, "instances": inst, "explained": len(recs), "tp": len(tp),
                "tp_pointing": mean_of(r["pointing"] for r in tp), "tp_energy": mean_of(r["energy"] for r in tp),
                "tp_energy_other": mean_of(r["energy_other"] for r in tp), "fp": len(fp),
                "fp_pointing": mean_of(r["pointing"] for r in fp), "fp_energy": mean_of(r["energy"] for r in fp),
                "fp_energy_other": mean_of(r["energy_other"] for r in fp), "missed": len(miss),
                "missed_pointing": mean_of(m.get("pointing") for m in miss),
                "missed_energy": mean_of(m.get("energy") for m in miss), "confused": len(confused),
                "confused_pointing": mean_of(r.get("contrast_pointing") for r in confused),
                "confused_energy": mean_of(r.get("contrast_energy") for r in confused),
                "tp_outside": mean_of(r.get("outside") for r in tp)}

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
    and consistency counters; worst: the gallery's cases (after `save`); confusions: per (detected, true) class
    pair the false positives over a ground truth of another class, with the mean pointing / energy of their
    contrast maps (`why_not.confusion_table`); stats: ultralytics' raw
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
    confusions: list[dict] = field(default_factory=list)  # per (detected, true) class pair (`why_not`)

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
            format_rows(_HEADER, self.table, TABLE_COLUMNS[:_SPLIT]), "",
            "why not: Miss-PG / Miss-EiB the missed ground truths' maps (best-overlapping prediction, true class's "
            "logit) against them; Confused: FPs over a ground truth of another class (IoU >= 0.5), Conf-PG / "
            "Conf-EiB their contrast:<true class> maps against it; TP-Out: heat outside the box grown by 10 %",
            format_rows(_WHY_HEADER, self.table, _WHY_KEYS),
            *(["", "confusions (true class -> detected as; PG / EiB: their contrast maps against the true box)",
               format_rows(_CONFUSION_HEADER, [{**c, "pair": f"{c['true']} -> {c['predicted']}"} for c in self.confusions],
                           ("pair", "count", "pointing", "energy"))]
              if self.confusions else [])])

    def to_dict(self) -> dict:
        return {"settings": self.settings, "metrics": self.metrics, "classes": self.classes, "table": self.table,
                "counts": self.counts, "skipped": self.skipped, "missed": self.missed, "predictions": self.predictions,
                "confusions": self.confusions, "worst": self.worst}

    def save(self, out) -> Path:
        """Write metrics.csv, predictions.csv, metrics.json, missed.npz (the missed ground truths' maps,
        `why_not.missed_npz`), worst/ and the plots (per_class.png, energy_vs_conf.png, tp_vs_fp.png; see
        `plots.py`) into `out`."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        if self.worst_cases is not None and len(self.worst_cases):
            meta = {k: self.settings[k] for k in ("model", "method", "target", "layers", "strides") if k in self.settings}
            self.worst = self.worst_cases.write(checked_dir(out, "worst"), meta)  # never through a link
        atomic_write_bytes(out / "metrics.csv", csv_bytes(self.table, TABLE_COLUMNS))
        pkeys = ("image", "index", "cls", "name", "conf", "box", "tp", "gt", "gt_box", "pointing", "energy",
                 "energy_other", "anchor", "level", "outside", "confused_with", "contrast_pointing", "contrast_energy")
        if self.predictions and all("rbox" in r for r in self.predictions):  # OBB: the rotated boxes too
            pkeys += ("rbox", "gt_rbox")
        atomic_write_bytes(out / "predictions.csv", csv_bytes(self.predictions, pkeys))
        atomic_write_bytes(out / "metrics.json", json.dumps(self.to_dict(), indent=1, default=float).encode())
        maps = missed_npz(self.missed)
        if maps is not None:
            atomic_write_bytes(out / "missed.npz", maps)
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
                            worst_cases=collector.worst, skipped=dict(getattr(validator, "skipped", None) or NO_SKIPS),
                            confusions=confusion_table(collector.records, names))
