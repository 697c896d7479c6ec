"""Explanation metrics per training epoch: one call adds callbacks to an `ultralytics.YOLO`.

    model = YOLO("yolov8n.yaml")
    yolocam.training.add_explain_callbacks(model, samples=8)
    model.train(data=..., epochs=...)     # -> RUN/yolocam_metrics.csv and RUN/yolocam_metrics.png

At every `on_fit_epoch_end` the callback explains a fixed sample of validation images with a deep
copy of the trainer's EMA (or model) in eval mode, scores the maps against the labels, appends one
row to `yolocam_metrics.csv` in the run folder and redraws `yolocam_metrics.png` (OpenCV). The
trainer's model, EMA, optimiser and random number generators are left exactly as they were.
"""

from __future__ import annotations

import copy
import random
from pathlib import Path

import cv2
import numpy as np
import torch

from ..errors import YolocamError
from ..defaults import DEFAULT_FUSE, DEFAULT_LAYERS, DEFAULT_METHOD
from ..explain.explainer import Explainer
from ..output.files import atomic_write_bytes, encode_png
from .metrics import deletion_insertion, localise
from .report import csv_bytes

CSV_NAME, PNG_NAME = "yolocam_metrics.csv", "yolocam_metrics.png"
COLUMNS = ("epoch", "images", "detections", "tp", "fp", "missed", "tp_pointing", "tp_energy", "tp_energy_other",
           "fp_energy", "deletion_auc", "insertion_auc")
PLOTTED = ("tp_pointing", "tp_energy", "tp_energy_other", "deletion_auc", "insertion_auc")
_COLOURS = ((200, 80, 0), (0, 150, 0), (0, 0, 220), (160, 0, 160), (0, 160, 200))


class EpochExplainer:
    """The `on_fit_epoch_end` callback; see the module docstring. Rows so far are in `.rows`.

    samples: validation images in the fixed sample (evenly spaced over the validation set);
    faithful: detections per image given deletion/insertion curves (0 = none); steps: their steps.
    """

    def __init__(self, samples: int = 8, method: str = DEFAULT_METHOD, target="class", layers=DEFAULT_LAYERS,
                 fuse: str = DEFAULT_FUSE, imgsz: int | None = None, conf: float = 0.25, faithful: int = 1,
                 steps: int = 8, max_det: int = 100):
        if not isinstance(samples, int) or samples < 1:
            raise YolocamError(f"samples: expected a positive int, got {samples!r}")
        self.samples, self.method, self.target, self.layers, self.fuse = samples, method, target, layers, fuse
        self.imgsz, self.conf, self.faithful, self.steps, self.max_det = imgsz, conf, faithful, steps, max_det
        self.rows: list[dict] = []
        self._sample: list[tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None
        self._final_seen = False

    def __call__(self, trainer) -> None:
        from ultralytics.utils import RANK

        if RANK not in (-1, 0):
            return
        if getattr(trainer, "stop", False):  # the last epoch; a second call is the final eval of best.pt
            if self._final_seen:
                return
            self._final_seen = True
        states = (random.getstate(), np.random.get_state(), torch.random.get_rng_state(),
                  torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)
        try:
            row = self.epoch_row(trainer)
        finally:
            random.setstate(states[0])
            np.random.set_state(states[1])
            torch.random.set_rng_state(states[2])
            if states[3] is not None:
                torch.cuda.set_rng_state_all(states[3])
        self.rows.append(row)
        save_dir = Path(trainer.save_dir)
        atomic_write_bytes(save_dir / CSV_NAME, csv_bytes(self.rows, COLUMNS))
        atomic_write_bytes(save_dir / PNG_NAME, encode_png(plot_rows(self.rows)))

    # ------------------------------------------------------------ one epoch
    def epoch_row(self, trainer) -> dict:
        """Explain the fixed sample with an eval-mode deep copy of the trainer's EMA/model; one CSV row."""
        source = trainer.ema.ema if getattr(trainer, "ema", None) is not None else trainer.model
        source = getattr(source, "module", source)  # DDP / DataParallel
        with torch.inference_mode(False):
            model = copy.deepcopy(source).float().eval()
            for t in list(model.parameters()) + list(model.buffers()):
                if t.is_inference():
                    t.data = t.data.clone()
        imgsz = self.imgsz or int(trainer.args.imgsz)
        exp = Explainer(model, method=self.method, target=self.target, layers=self.layers, fuse=self.fuse,
                        imgsz=imgsz)
        acc = {"pointing": [], "energy": [], "energy_other": [], "fp_energy": [], "deletion_auc": [],
               "insertion_auc": []}
        n_det = n_tp = n_missed = 0
        sample = self.sample(trainer)
        for image, gt_boxes, gt_cls in sample:
            x, (lb,) = exp.adapter.preprocess([image], imgsz)
            res = exp.engine.run(x, conf=self.conf, max_det=self.max_det)
            dets, maps = res.detections[0], res.heatmaps[0]
            n_det += len(dets)
            gx, gy = lb.gain_xy
            w, h = lb.new_unpad
            shift = torch.tensor([lb.left, lb.top, lb.left, lb.top], dtype=torch.float32)
            boxes = torch.tensor([d.box for d in dets], dtype=torch.float32).view(-1, 4) - shift
            gt = torch.as_tensor(gt_boxes).float().view(-1, 4) * torch.tensor([gx, gy, gx, gy])
            loc = localise(maps[:, lb.top:lb.top + h, lb.left:lb.left + w], boxes, [d.cls for d in dets], gt, gt_cls)
            n_tp += int(loc.tp.sum())
            n_missed += int(loc.missed.sum())
            for key in ("pointing", "energy", "energy_other"):
                acc[key] += getattr(loc, key)[loc.tp].tolist()
            acc["fp_energy"] += [v for v in loc.energy[~loc.tp].tolist() if v == v]
            tps = [k for k in range(len(dets)) if loc.tp[k]][: self.faithful]
            for k in tps:
                dele, ins = deletion_insertion(exp.adapter, x, maps[k], dets[k].box, dets[k].cls, steps=self.steps)
                acc["deletion_auc"].append(dele.auc)
                acc["insertion_auc"].append(ins.auc)
        mean = lambda v: float(np.mean(v)) if v else float("nan")  # noqa: E731
        return {"epoch": int(trainer.epoch) + 1, "images": len(sample), "detections": n_det, "tp": n_tp,
                "fp": n_det - n_tp, "missed": n_missed, "tp_pointing": mean(acc["pointing"]),
                "tp_energy": mean(acc["energy"]), "tp_energy_other": mean(acc["energy_other"]),
                "fp_energy": mean(acc["fp_energy"]), "deletion_auc": mean(acc["deletion_auc"]),
                "insertion_auc": mean(acc["insertion_auc"])}

    def sample(self, trainer) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """The fixed sample: (BGR image, boxes (M, 4) xyxy original pixels, classes (M,)), chosen once."""
        if self._sample is None:
            labels = validation_labels(trainer)
            if not labels:
                raise YolocamError("training callbacks: the trainer has no validation images to explain")
            picks = sorted(set(np.linspace(0, len(labels) - 1, min(self.samples, len(labels))).round().astype(int)))
            self._sample = []
            for i in picks:
                lab = labels[i]
                image = cv2.imread(lab["im_file"])
                if image is None:
                    continue
                h, w = image.shape[:2]
                xywh = np.asarray(lab["bboxes"], np.float32).reshape(-1, 4) * [w, h, w, h]
                xyxy = np.concatenate([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], 1)
                self._sample.append((image, xyxy, np.asarray(lab["cls"]).reshape(-1).astype(np.int64)))
        return self._sample


def validation_labels(trainer) -> list[dict]:
    """ultralytics' own validation labels (dicts with im_file, normalised xywh bboxes, cls)."""
    loader = getattr(trainer, "test_loader", None) or getattr(getattr(trainer, "validator", None), "dataloader", None)
    dataset = getattr(loader, "dataset", None)
    labels = getattr(dataset, "labels", None) or []
    return [lab for lab in labels if isinstance(lab, dict) and "im_file" in lab]


def plot_rows(rows: list[dict], size: tuple[int, int] = (420, 720)) -> np.ndarray:
    """A BGR line plot (H, W, 3) of the PLOTTED columns (values in [0, 1]) over epochs."""
    h, w = size
    img = np.full((h, w, 3), 255, np.uint8)
    left, right, top, bottom = 50, w - 170, 20, h - 40
    cv2.rectangle(img, (left, top), (right, bottom), (0, 0, 0), 1)
    for v in (0.0, 0.5, 1.0):
        y = int(bottom - v * (bottom - top))
        cv2.line(img, (left - 4, y), (left, y), (0, 0, 0), 1)
        cv2.putText(img, f"{v:.1f}", (8, y + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    epochs = [r["epoch"] for r in rows]
    lo, hi = min(epochs), max(max(epochs), min(epochs) + 1)
    for e in sorted(set(epochs)):
        x = int(left + (e - lo) / (hi - lo) * (right - left))
        cv2.putText(img, str(e), (x - 4, bottom + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, "epoch", ((left + right) // 2 - 20, h - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
    for k, (key, colour) in enumerate(zip(PLOTTED, _COLOURS)):
        pts = [(int(left + (r["epoch"] - lo) / (hi - lo) * (right - left)),
                int(bottom - min(max(r[key], 0.0), 1.0) * (bottom - top))) for r in rows if r[key] == r[key]]
        for a, b in zip(pts, pts[1:]):
            cv2.line(img, a, b, colour, 2, cv2.LINE_AA)
        for p in pts:
            cv2.circle(img, p, 3, colour, -1, cv2.LINE_AA)
        y = top + 14 + 20 * k
        cv2.line(img, (right + 10, y - 4), (right + 30, y - 4), colour, 2)
        cv2.putText(img, key, (right + 36, y), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
    return img


def add_explain_callbacks(yolo, samples: int = 8, method: str = DEFAULT_METHOD, target="class",
                          layers=DEFAULT_LAYERS, fuse: str = DEFAULT_FUSE, imgsz: int | None = None,
                          conf: float = 0.25, faithful: int = 1, steps: int = 8, max_det: int = 100) -> EpochExplainer:
    """Register an `EpochExplainer` on `yolo` (an `ultralytics.YOLO`) for `on_fit_epoch_end`; returns it.

    imgsz: None = the training imgsz. conf / max_det: detection threshold and cap per sampled image.
    """
    if not hasattr(yolo, "add_callback"):
        raise YolocamError(f"yolo: expected an ultralytics.YOLO model, got {type(yolo).__name__}")
    callback = EpochExplainer(samples, method, target, layers, fuse, imgsz, conf, faithful, steps, max_det)
    yolo.add_callback("on_fit_epoch_end", callback)
    return callback
