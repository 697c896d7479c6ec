"""Figures drawn with matplotlib: explanation metrics per training epoch, and the validation report's plots.

Figures are made with `matplotlib.figure.Figure` and the Agg canvas, never `pyplot`, so no global
backend or state of the user's process is touched. Each function returns PNG bytes.
"""

from __future__ import annotations

import io
import math

import numpy as np

TRAINING_PANELS = (
    ("localisation of true positives", (("tp_pointing", "pointing game"), ("tp_energy", "energy in box"),
                                        ("tp_energy_other", "energy on other objects"))),
    ("false positives", (("fp_energy", "energy in nearest box"),)),
    ("faithfulness", (("deletion_auc", "deletion AUC (lower is better)"),
                      ("insertion_auc", "insertion AUC (higher is better)"))),
)
TP_COLOUR, FP_COLOUR, MISSED_COLOUR = "#1f77b4", "#d62728", "#595959"
# The counts panel, drawn in this order: a hollow ring, a small filled square, a cross. Equal counts put the
# three at one point, and each stays visible there (the square inside the ring, the cross's arms between).
COUNT_SERIES = (
    ("tp", "true positives", dict(color=TP_COLOUR, marker="o", ms=11, mfc="none", mew=1.8, ls="-", lw=1.6)),
    ("fp", "false positives", dict(color=FP_COLOUR, marker="s", ms=4.5, ls="--", lw=1.6)),
    ("missed", "missed", dict(color=MISSED_COLOUR, marker="x", ms=7, mew=1.4, ls=":", lw=1.6)),
)


def _figure(w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def _finite(values) -> list[float]:
    return [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]


def training_png(rows: list[dict], title: str = "explanations of the fixed validation sample") -> bytes:
    """Explanation metrics (values in [0, 1]) against the epoch, one panel per group, plus the counts."""
    fig = _figure(13, 3.8)
    axes = fig.subplots(1, len(TRAINING_PANELS) + 1)
    epochs = [int(r["epoch"]) for r in rows]
    for ax, (name, series) in zip(axes, TRAINING_PANELS):
        for key, label in series:
            pts = [(e, float(r[key])) for e, r in zip(epochs, rows) if not math.isnan(float(r[key]))]
            if pts:
                ax.plot(*zip(*pts), marker="o", ms=4, label=label)
        ax.set_title(name, fontsize=11)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="best")
    ax = axes[-1]
    for key, label, style in COUNT_SERIES:
        ax.plot(epochs, [int(r[key]) for r in rows], label=label, **style)
    ax.set_title("detections explained", fontsize=11)
    ax.set_xlabel("epoch")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    for ax in axes:
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle(title, fontsize=12)
    return _png(fig)


def per_class_png(table: list[dict]) -> bytes:
    """Grouped bars per class: true positives' pointing game, energy in box, energy on other objects,
    and false positives' energy in the nearest box; counts under each class name."""
    rows = [r for r in table if r["class"] != "all"] + [r for r in table if r["class"] == "all"]
    keys = (("tp_pointing", "TP pointing game"), ("tp_energy", "TP energy in box"),
            ("tp_energy_other", "TP energy on other objects"), ("fp_energy", "FP energy in nearest box"))
    fig = _figure(max(7.0, 1.3 * len(rows) + 2), 4.6)
    ax = fig.subplots()
    x = np.arange(len(rows))
    width = 0.8 / len(keys)
    for k, (key, label) in enumerate(keys):
        vals = [float(r[key]) for r in rows]
        ax.bar(x + (k - (len(keys) - 1) / 2) * width, [0 if math.isnan(v) else v for v in vals], width, label=label)
    ax.set_xticks(x, [f"{r['class']}\nTP {r['tp']} / FP {r['fp']}" for r in rows], fontsize=9)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("mean over the class's explained predictions")
    ax.set_title("explanation metrics per class")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncols=4, loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False)
    return _png(fig)


def energy_vs_conf_png(predictions: list[dict]) -> bytes:
    """Each explained prediction's energy in box against its confidence, true and false positives apart."""
    fig = _figure(6.5, 4.5)
    ax = fig.subplots()
    for tp, colour, label in ((True, TP_COLOUR, "true positive"), (False, FP_COLOUR, "false positive")):
        pts = [(float(p["conf"]), float(p["energy"])) for p in predictions
               if bool(p["tp"]) == tp and p.get("energy") is not None and not math.isnan(float(p["energy"]))]
        if pts:
            ax.scatter(*zip(*pts), s=14, alpha=0.6, c=colour, label=f"{label} ({len(pts)})", edgecolors="none")
    ax.set_xlabel("confidence")
    ax.set_ylabel("energy in box (TP: matched, FP: nearest ground truth)")
    ax.set_xlim(0, 1.0)
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("energy in box against confidence")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # nothing explained: an empty plot without a legend
        ax.legend(fontsize=9, loc="best")
    return _png(fig)


def tp_fp_png(predictions: list[dict]) -> bytes:
    """Distributions of energy in box and pointing game for true and false positives."""
    fig = _figure(10, 3.8)
    ax1, ax2 = fig.subplots(1, 2)
    bins = np.linspace(0, 1, 21)
    for tp, colour, label in ((True, TP_COLOUR, "true positives"), (False, FP_COLOUR, "false positives")):
        group = [p for p in predictions if bool(p["tp"]) == tp]
        energy = _finite(p.get("energy") for p in group)
        if energy:
            ax1.hist(energy, bins=bins, alpha=0.55, color=colour, label=f"{label} ({len(energy)})", density=True)
        pointing = _finite(p.get("pointing") for p in group)
        if pointing:
            ax2.bar(label, float(np.mean(pointing)), color=colour, alpha=0.8)
            ax2.text(label, float(np.mean(pointing)) + 0.02, f"{np.mean(pointing):.2f} (n={len(pointing)})",
                     ha="center", fontsize=9)
    ax1.set_xlabel("energy in box")
    ax1.set_ylabel("density")
    ax1.set_title("where the heat goes: TP vs FP")
    ax1.grid(alpha=0.3)
    if ax1.get_legend_handles_labels()[0]:
        ax1.legend(fontsize=9)
    ax2.set_ylim(0, 1.1)
    ax2.set_ylabel("pointing game (share of maps peaking in the box)")
    ax2.set_title("pointing game: TP vs FP")
    ax2.grid(axis="y", alpha=0.3)
    return _png(fig)


def report_pngs(table: list[dict], predictions: list[dict]) -> dict[str, bytes]:
    """The validation report's figures by file name."""
    return {"per_class.png": per_class_png(table), "energy_vs_conf.png": energy_vs_conf_png(predictions),
            "tp_vs_fp.png": tp_fp_png(predictions)}
