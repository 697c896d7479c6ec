"""Explanation metrics per training epoch: one call adds callbacks to an `ultralytics.YOLO`.

    model = YOLO("yolov8n.yaml")
    yolocam.training.add_explain_callbacks(model, samples=8)
    model.train(data=..., epochs=...)     # -> RUN/yolocam_metrics.csv and RUN/yolocam_metrics.png

At every `on_fit_epoch_end` the callback explains a fixed sample of validation images with a deep
copy of the trainer's EMA (or model) in eval mode, scores the maps against the labels, appends one
row to `yolocam_metrics.csv` in the run folder and redraws `yolocam_metrics.png` (matplotlib). When
the run logs to TensorBoard (ultralytics' `tensorboard` setting, or `tensorboard=True` here), the
epoch's metrics go there too (`yolocam/<column>` scalars) with a few heatmap panels
(`yolocam/heatmaps` images). The trainer's model, EMA, optimiser and random number generators are
left exactly as they were.
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
from ..output.files import atomic_write_bytes
from ..output.labels import conf_text
from ..output.render import draw_boxes, draw_heat
from .metrics import deletion_insertion, localise
from .plots import training_png
from .report import csv_bytes

CSV_NAME, PNG_NAME = "yolocam_metrics.csv", "yolocam_metrics.png"
COLUMNS = ("epoch", "images", "detections", "tp", "fp", "missed", "tp_pointing", "tp_energy", "tp_energy_other",
           "fp_energy", "deletion_auc", "insertion_auc")
SCALARS = COLUMNS[1:]  # logged to TensorBoard as yolocam/<column>
PANEL_SIDE = 256  # heatmap panels for TensorBoard: each sampled image at most this many pixels a side


class EpochExplainer:
    """The `on_fit_epoch_end` callback; see the module docstring. Rows so far are in `.rows`.

    samples: validation images in the fixed sample (evenly spaced over the validation set);
    faithful: detections per image given deletion/insertion curves (0 = none); steps: their steps.
    tensorboard: None = log to TensorBoard when ultralytics does (its writer is open); True = always
    (ultralytics' writer, else one of ours in the run folder); False = never. panels: sampled images
    shown as heatmap panels there.
    """

    def __init__(self, samples: int = 8, method: str = DEFAULT_METHOD, target="class", layers=DEFAULT_LAYERS,
                 fuse: str = DEFAULT_FUSE, imgsz: int | None = None, conf: float = 0.25, faithful: int = 1,
                 steps: int = 8, max_det: int = 100, tensorboard: bool | None = None, panels: int = 4):
        if not isinstance(samples, int) or samples < 1:
            raise YolocamError(f"samples: expected a positive int, got {samples!r}")
        self.samples, self.method, self.target, self.layers, self.fuse = samples, method, target, layers, fuse
        self.imgsz, self.conf, self.faithful, self.steps, self.max_det = imgsz, conf, faithful, steps, max_det
        self.tensorboard, self.panels = tensorboard, panels
        self.rows: list[dict] = []
        self._panels: list[np.ndarray] = []
        self._writer = None
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
        atomic_write_bytes(save_dir / PNG_NAME, training_png(self.rows))
        self.log_tensorboard(save_dir, row)

    def log_tensorboard(self, save_dir: Path, row: dict) -> None:
        """The epoch's metrics and heatmap panels, to ultralytics' TensorBoard writer or ours (see class doc)."""
        writer = self._tensorboard_writer(save_dir)
        if writer is None:
            return
        step = int(row["epoch"])
        for key in SCALARS:
            value = float(row[key])
            if not np.isnan(value):
                writer.add_scalar(f"yolocam/{key}", value, step)
        if self._panels:
            h = max(p.shape[0] for p in self._panels)
            strip = np.concatenate([np.pad(p, ((0, h - p.shape[0]), (0, 4), (0, 0))) for p in self._panels], 1)
            writer.add_image("yolocam/heatmaps", strip[:, :, ::-1].copy(), step, dataformats="HWC")
        writer.flush()

    def _tensorboard_writer(self, save_dir: Path):
        if self.tensorboard is False:
            return None
        try:
            from ultralytics.utils.callbacks import tensorboard as ul_tb

            theirs = getattr(ul_tb, "WRITER", None)
        except Exception:  # noqa: BLE001 - no TensorBoard support in this ultralytics
            theirs = None
        if theirs is not None:
            return theirs
        if not self.tensorboard:
            return None
        if self._writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:
                raise YolocamError("tensorboard=True needs the tensorboard package (pip install tensorboard)") from exc
            self._writer = SummaryWriter(str(save_dir))
        return self._writer

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
        self._panels = []
        for i, (image, gt_boxes, gt_cls) in enumerate(sample):
            x, (lb,) = exp.adapter.preprocess([image], imgsz)
            res = exp.runner.run(x, conf=self.conf, max_det=self.max_det)
            dets, maps = res.detections[0], res.heatmaps[0]
            n_det += len(dets)
            gx, gy = lb.gain_xy
            w, h = lb.new_unpad
            shift = torch.tensor([lb.left, lb.top, lb.left, lb.top], dtype=torch.float32)
            boxes = torch.tensor([d.box for d in dets], dtype=torch.float32).view(-1, 4) - shift
            gt = torch.as_tensor(gt_boxes).float().view(-1, 4) * torch.tensor([gx, gy, gx, gy])
            loc = localise(maps[:, lb.top:lb.top + h, lb.left:lb.left + w], boxes, [d.cls for d in dets], gt, gt_cls)
            n_tp += int(loc.tp.sum())
            if i < self.panels:
                self._panels.append(panel(x, maps, dets, lb, loc.tp))
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


def plot_rows(rows: list[dict]) -> np.ndarray:
    """The metrics chart (`yolocam_metrics.png`, matplotlib) as a BGR array."""
    return cv2.imdecode(np.frombuffer(training_png(rows), np.uint8), cv2.IMREAD_COLOR)


def panel(x: torch.Tensor, maps: torch.Tensor, dets, lb, tp) -> np.ndarray:
    """One sampled image (the letterboxed input without padding) with the union of its maps and its
    boxes (labelled TP/FP), at most PANEL_SIDE pixels a side, BGR."""
    w, h = lb.new_unpad
    img = (x[0, :, lb.top:lb.top + h, lb.left:lb.left + w].permute(1, 2, 0).float().cpu().numpy() * 255)
    img = np.ascontiguousarray(img.clip(0, 255).astype(np.uint8)[:, :, ::-1])
    heat = maps[:, lb.top:lb.top + h, lb.left:lb.left + w].amax(0).float().cpu().numpy() if len(dets) else \
        np.zeros((h, w), np.float32)
    gain = PANEL_SIDE / max(h, w)
    size = (max(int(round(w * gain)), 1), max(int(round(h * gain)), 1))
    img, heat = cv2.resize(img, size), cv2.resize(heat, size)
    out = draw_heat(img, heat)  # as every picture yolocam draws: the energy scale, outlined
    shown = list(dets)[:8]
    boxes = [type("D", (), {"box": [(d.box[0] - lb.left) * gain, (d.box[1] - lb.top) * gain,
                                    (d.box[2] - lb.left) * gain, (d.box[3] - lb.top) * gain], "cls": d.cls})
             for d in shown]
    draw_boxes(out, boxes, [("TP " if bool(tp[k]) else "FP ") + conf_text(d.conf) for k, d in enumerate(shown)], size=11)
    return out


def add_explain_callbacks(yolo, samples: int = 8, method: str = DEFAULT_METHOD, target="class",
                          layers=DEFAULT_LAYERS, fuse: str = DEFAULT_FUSE, imgsz: int | None = None,
                          conf: float = 0.25, faithful: int = 1, steps: int = 8, max_det: int = 100,
                          tensorboard: bool | None = None, panels: int = 4) -> EpochExplainer:
    """Register an `EpochExplainer` on `yolo` (an `ultralytics.YOLO`) for `on_fit_epoch_end`; returns it.

    imgsz: None = the training imgsz. conf / max_det: detection threshold and cap per sampled image.
    Segment, pose and OBB models are scored by their boxes (OBB: the rotated boxes' axis-aligned hulls, as
    ultralytics' labels store them); classification models are refused.
    tensorboard / panels: see `EpochExplainer`.
    """
    if not hasattr(yolo, "add_callback"):
        raise YolocamError(f"yolo: expected an ultralytics.YOLO model, got {type(yolo).__name__}")
    if getattr(yolo, "task", "detect") == "classify":
        raise YolocamError("training callbacks score maps against labelled boxes: expected a detect, segment, pose "
                           "or obb model, got a classification model")
    callback = EpochExplainer(samples, method, target, layers, fuse, imgsz, conf, faithful, steps, max_det,
                              tensorboard, panels)
    yolo.add_callback("on_fit_epoch_end", callback)
    return callback
