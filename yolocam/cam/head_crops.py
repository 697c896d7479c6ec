"""Local targets read from the head evaluated on a few cells around each anchor, not on whole maps.

A target local to one anchor (its class score, its box coordinates) depends only on the head
branches' reach around that anchor's cell (2 cells for the usual 3x3, 3x3, 1x1 branches). The
head is therefore run on a crop of (2 reach + 1)^2 cells of the level's input, clipped to the
map: exact for the anchor (see `windows.py` for why clipped crops are exact), and its backward
pass touches only those cells. Rows are grouped by crop geometry, so equally placed anchors
(all but those near a border) share one head call.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import torch

from ..model.adapter import ModelAdapter
from ..model.detections import Detection
from ..model.targets import Jobs, Target


def local_targets(adapter: ModelAdapter, target: Target, replay: list, level: int, reach: int,
                  items: Sequence[tuple[int, Detection, int, tuple[int, int]]]) -> torch.Tensor:
    """Target values (n,) for n jobs of one level, in order.

    replay: layer outputs holding the level's live head input (B, C, h, w); items: per job
    (batch row, detection, component, (gy, gx) its anchor's cell in that (h, w) grid).
    """
    feat = replay[adapter.head_inputs[level]]
    h, w = feat.shape[-2:]
    groups: dict[tuple[int, int, int, int], list] = {}
    for i, (row, det, comp, (gy, gx)) in enumerate(items):
        y0, y1, x0, x1 = max(0, gy - reach), min(h, gy + reach + 1), max(0, gx - reach), min(w, gx + reach + 1)
        groups.setdefault((y1 - y0, x1 - x0, gy - y0, gx - x0), []).append((i, row, y0, x0, det, comp))
    parts, order = [], []
    for (hc, wc, oy, ox), members in groups.items():
        crop = torch.cat([feat[row:row + 1, :, y0:y0 + hc, x0:x0 + wc] for _, row, y0, x0, _, _ in members])
        feeds = [None] * len(adapter.layers)
        for lvl, j in enumerate(adapter.head_inputs):  # other levels: no cells
            feeds[j] = crop if lvl == level else crop.new_zeros((len(members), 1, 0, 0))
        head = adapter.head_outputs(feeds, level, boxes=target.needs_boxes, masks=False)
        jobs = Jobs.build([replace(m[4], anchor=oy * wc + ox) for m in members], [m[5] for m in members], feat.device)
        parts.append(target(head, jobs))
        order += [m[0] for m in members]
    values = torch.cat(parts)
    return values[torch.tensor(order, device=values.device).argsort()]
