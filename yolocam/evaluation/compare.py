"""Every CAM method side by side on generated scenes (how the defaults are chosen).

Method comparison: for each scene (`yolocam.scenes.make_scene`, test-split seeds) the detector runs
once; every method then explains the same detections. Per method: pointing game, energy-in-box and
energy on the other objects (true positives against their matched ground truth), deletion and
insertion AUC (the `faithful` highest-confidence detections per scene), and the model-randomisation
rank correlations on the whole map and inside the box (all detections; the same re-initialised copy
of the model for every method; lower is better). Optionally (`stability=True`) each method's
stability under a JPEG-90 re-save and a 2-px shift (`evaluation/stability.py`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

import torch

from ..cam.drise import DriseConfig, DriseEngine
from ..cam.engine import CamEngine
from ..cam.methods import get_method, list_methods
from ..defaults import DEFAULT_FUSE, DEFAULT_LAYERS, DEFAULT_METHOD
from ..errors import YolocamError
from ..explain.explainer import Explainer, resolve_model
from ..model.detections import select_detections
from ..output.files import atomic_write_bytes, prepare_out_dir
from .evidence import evidence_scores, gaussian_box_map
from .metrics import box_spearman, deletion_insertion, explain_fixed, localise, randomised_copy, spearman
from .report import csv_bytes, format_rows, mean_of
from .stability import aggregate
from .stability import stability as stability_records

COLUMNS = ("method", "detections", "tp", "pointing", "energy", "energy_other", "deletion_auc", "insertion_auc",
           "randomisation", "randomisation_box", "seconds")
HEADER = ("Method", "Dets", "TP", "PG", "EiB", "EoO", "Del-AUC", "Ins-AUC", "Rand-rho", "Rand-box", "Seconds")
EVIDENCE_COLUMNS = ("evidence_pointing", "evidence_share", "evidence_x_gauss")
EVIDENCE_HEADER = ("EvPG", "EvShare", "xGauss")
# stability=True: column prefix -> perturbation; per prefix the median map correlation and the peak-kept share
STABILITY_CHECKS = {"jpeg90": "jpeg90", "shift2": "shift2_1"}
STABILITY_COLUMNS = ("jpeg90_r", "jpeg90_peak", "shift2_r", "shift2_peak")
STABILITY_HEADER = ("JPEG-r", "JPEG-pk", "Shift-r", "Shift-pk")


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
                    seed: int = 0, drise: dict | None = None, evidence: bool = False,
                    stability: bool = False, progress: bool | None = None) -> list[dict]:
    """One row per method (see COLUMNS) measured on `scenes` generated scenes.

    evidence: use the evidence scenes (`yolocam.demo.evidence`, for a detector such as `demo-marks`)
    and add EVIDENCE_COLUMNS per method over the true positives: evidence pointing, evidence share,
    and that share over a box-centred Gaussian's on the same boxes (`evaluation/evidence.py`).

    stability: add STABILITY_COLUMNS per method: each scene re-explained as a JPEG-90 copy and shifted by
    (2, 1) px, the detections matched again; the median map correlation in the box grown by 25 % and the
    share whose peak moves at most 8 px (`evaluation/stability.py`). Costs three more explanations per scene.

    model: as `Explainer` (None = bundled demo detector); imgsz: None = the model's training size (else 640);
    steps: deletion/insertion steps; faithful: detections per scene given deletion/insertion curves;
    drise: `DriseConfig` fields (masks, cell, keep, seed, batch) for the black-box method `drise`.
    progress: None shows the progress (each method of each scene, and the method at work) as a bar on a
    terminal and as a line every 10 s elsewhere; False is silent, True forces the bar.
    """
    from ..output.progress import Progress

    from ..demo.evidence import make_evidence_scene
    from ..demo.scenes import make_scene, scene_seed

    make = make_evidence_scene if evidence else make_scene
    names = _unique_methods(methods)
    gradient = [m for m in names if not get_method(m).black_box]
    _, model, train_imgsz = resolve_model(model)
    exp = Explainer(model, method=gradient[0] if gradient else DEFAULT_METHOD, target=target, layers=layers,
                    fuse=fuse, imgsz=train_imgsz if imgsz is None else int(imgsz), device=device)
    adapter = exp.adapter
    if adapter.task == "classify":
        raise YolocamError("compare_methods scores each detection's map against the boxes of generated scenes: "
                           "expected a detect, segment, pose or obb model, got a classification model (its maps "
                           "are image-level; examples/task_quality.py --task classify measures them)")
    cfg = DriseConfig(**(drise or {})).check()

    def engine(adapter, layers, m):  # black-box methods: the same detections from masked passes
        if get_method(m).black_box:
            return DriseEngine(adapter, cfg)
        return CamEngine(adapter, get_method(m), exp.target, layers, fuse=fuse)

    engines = {m: engine(adapter, exp.layers, m) for m in names}
    drise_args = dict(masks=cfg.masks, cell=cfg.cell, keep=cfg.keep, seed=cfg.seed, mask_batch=cfg.batch)
    stable = {m: Explainer(model, method=m, target=target, layers=layers, fuse=fuse, imgsz=exp.imgsz, device=device,
                           **(drise_args if get_method(m).black_box else {})) for m in names} if stability else {}
    rand = randomised_copy(exp.engine, seed=seed)
    rand_engines = {m: engine(rand.adapter, rand.layers, m) for m in names}
    acc = {m: {"pointing": [], "energy": [], "energy_other": [], "deletion_auc": [], "insertion_auc": [],
               "randomisation": [], "randomisation_box": [], "seconds": 0.0, "detections": 0, "tp": 0,
               "evidence_pointing": [], "evidence_share": [], "gauss_share": [], "stability": []} for m in names}
    bar = Progress(int(scenes) * len(names), desc="compare", unit="method runs", enabled=progress)
    try:
        for i in range(int(scenes)):
            _compare_scene(make(scene_seed(seed, "test", i)), names, acc, adapter, exp, engines, rand_engines,
                           stable, conf, iou, steps, faithful, evidence, stability, bar)
    finally:
        bar.close()
    return _rows(names, acc, evidence, stability)


def _compare_scene(scene, names, acc, adapter, exp, engines, rand_engines, stable, conf, iou, steps, faithful,
                   evidence, stability, bar) -> None:
    """Explain one generated scene with every method, adding its scores to `acc`; `bar` advances per method."""
    x, (lb,) = adapter.preprocess([scene.image], exp.imgsz)
    with adapter.explaining(), torch.no_grad():
        _, head = adapter.forward(x)
    dets = select_detections(head, adapter.end2end, conf, iou)
    if not dets[0]:
        bar.update(len(names))
        return
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
        if evidence:
            _evidence(a, maps[:, lb.top:lb.top + h, lb.left:lb.left + w], boxes, loc, scene, (gx, gy))
        a["detections"] += len(dets[0])
        for d, heat in list(zip(dets[0], maps))[:faithful]:
            dele, ins = deletion_insertion(adapter, x, heat, d.box, d.cls, steps=steps)
            a["deletion_auc"].append(dele.auc)
            a["insertion_auc"].append(ins.auc)
        after = explain_fixed(rand_engines[m], x, lambda head: dets).heatmaps[0]
        a["randomisation"] += [spearman(u, v) for u, v in zip(maps.cpu(), after.cpu())]
        a["randomisation_box"] += box_spearman(maps.cpu(), after.cpu(), dets[0])
        a["seconds"] += time.perf_counter() - t0
        if stability:
            a["stability"] += stability_records(stable[m], scene.image, list(STABILITY_CHECKS.values()),
                                                conf=conf, iou=iou)
        bar.update(1, method=m)


def _rows(names, acc, evidence: bool, stability: bool) -> list[dict]:
    """One row per method (see COLUMNS) from the scores gathered in `acc`."""
    rows = []
    for m in names:
        a = acc[m]
        rows.append({"method": m, "detections": a["detections"], "tp": a["tp"], "seconds": round(a["seconds"], 2),
                     **{k: mean_of(a[k]) for k in ("pointing", "energy", "energy_other", "deletion_auc",
                                                  "insertion_auc", "randomisation", "randomisation_box")}})
        if evidence:
            gauss = mean_of(a["gauss_share"])
            rows[-1].update(evidence_pointing=mean_of(a["evidence_pointing"]),
                            evidence_share=mean_of(a["evidence_share"]),
                            evidence_x_gauss=mean_of(a["evidence_share"]) / gauss if gauss else float("nan"))
        if stability:
            rows[-1].update(_stability_columns(a["stability"]))
    return rows


def _stability_columns(records: list[dict]) -> dict:
    """STABILITY_COLUMNS from per-detection stability records (NaN when no detection was found)."""
    by_name = {r["perturbation"]: r for r in aggregate(records)}
    out = {}
    for prefix, name in STABILITY_CHECKS.items():
        row = by_name.get(name, {})
        out[f"{prefix}_r"] = row.get("r_median", float("nan"))
        out[f"{prefix}_peak"] = row.get("peak_kept", float("nan"))
    return out


def _evidence(acc: dict, maps: torch.Tensor, boxes: torch.Tensor, loc, scene, gain: tuple[float, float]) -> None:
    """Add the true positives' evidence scores (and the Gaussian baseline's share) to `acc`.
    maps (N, h, w) and boxes (N, 4) are in letterboxed content pixels; the scene's marks are scaled by `gain`."""
    tp = loc.tp.nonzero().view(-1).tolist()
    if not tp:
        return
    gt = loc.reference[tp].tolist()
    (gx, gy), shape = gain, tuple(maps.shape[-2:])
    discs = [(float(scene.mark_centres[g][0]) * gx, float(scene.mark_centres[g][1]) * gy,
              float(scene.mark_diameters[g]) * (gx + gy) / 2) for g in gt]
    pointing, share = evidence_scores(maps[tp].cpu(), boxes[tp], discs)
    gauss = torch.stack([gaussian_box_map(shape, boxes[k]) for k in tp])
    _, gauss_share = evidence_scores(gauss, boxes[tp], discs)
    acc["evidence_pointing"] += pointing.tolist()
    acc["evidence_share"] += share.tolist()
    acc["gauss_share"] += gauss_share.tolist()


def _extra_columns(rows: list[dict]) -> tuple[tuple, tuple]:
    """(header, keys) of the optional columns the rows hold: evidence, then stability."""
    header, keys = (), ()
    if rows and "evidence_pointing" in rows[0]:
        header, keys = header + EVIDENCE_HEADER, keys + EVIDENCE_COLUMNS
    if rows and STABILITY_COLUMNS[0] in rows[0]:
        header, keys = header + STABILITY_HEADER, keys + STABILITY_COLUMNS
    return header, keys


def format_comparison(rows: list[dict]) -> str:
    """The comparison as an ultralytics-style table (PG/EiB/EoO on true positives; higher is better
    except EoO, Del-AUC and Rand-rho; evidence and stability columns when measured)."""
    header, keys = _extra_columns(rows)
    return format_rows(HEADER[:-1] + header + HEADER[-1:], rows, COLUMNS[:-1] + keys + COLUMNS[-1:])


def save_comparison(rows: list[dict], out) -> Path:
    """Write compare_methods.csv and compare_methods.json into `out`."""
    out = prepare_out_dir(out)
    columns = COLUMNS + _extra_columns(rows)[1]
    atomic_write_bytes(out / "compare_methods.csv", csv_bytes(rows, columns))
    atomic_write_bytes(out / "compare_methods.json", json.dumps(rows, indent=1).encode())
    return out
