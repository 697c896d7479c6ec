"""The training chart's counts panel: true and false positives stay visible where their counts coincide."""

from __future__ import annotations

import cv2
import numpy as np

from yolocam.evaluation.plots import FP_COLOUR, TP_COLOUR, training_png


def rows(tp: int, fp: int, epochs=(1,)) -> list[dict]:
    return [{"epoch": e, "images": 4, "detections": tp + fp, "tp": tp, "fp": fp, "missed": 3, "tp_pointing": 0.5,
             "tp_energy": 0.4, "tp_energy_other": 0.1, "fp_energy": 0.2, "deletion_auc": 0.2, "insertion_auc": 0.8}
            for e in epochs]


def pixels(png: bytes, colour: str) -> int:
    """Pixels of `colour` (#rrggbb, within antialiasing) in the counts panel (the right quarter)."""
    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    panel = image[:, image.shape[1] * 3 // 4:].astype(int)
    bgr = np.array([int(colour[k:k + 2], 16) for k in (5, 3, 1)])
    return int((np.abs(panel - bgr).sum(-1) < 40).sum())


def test_coinciding_tp_and_fp_markers_both_show():
    # one epoch: no lines, only the markers (and the legend's): equal counts put both markers at one point
    same, apart = training_png(rows(18, 18)), training_png(rows(18, 6))
    for colour in (TP_COLOUR, FP_COLOUR):
        legend_and_marker = pixels(apart, colour)
        assert legend_and_marker > 100
        assert pixels(same, colour) >= 0.95 * legend_and_marker, colour  # neither marker hidden by the other
    # over epochs, the lines too: the dashed false-positive line leaves the true-positive line visible
    over = training_png(rows(18, 18, epochs=(1, 2, 3)))
    assert pixels(over, TP_COLOUR) > 2 * pixels(same, TP_COLOUR) and pixels(over, FP_COLOUR) > pixels(same, FP_COLOUR)
