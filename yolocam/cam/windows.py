"""Receptive-field windows: a detection's raw prediction depends only on a window of the image.

A class score or box coordinate read at one anchor of level l depends, in every tensor the
replay uses, only on positions within a margin M_l (pixels) of that anchor's cell: each
convolution widens the dependency by its kernel reach times its stride. Re-running the
replayed layers on crops of their captured inputs, clipped to the image and aligned to the
coarsest stride, reproduces the anchor's value and its gradients exactly when the crop extends
M_l beyond the cell: positions near an interior crop edge are wrong (the convolutions pad
there with zeros), but the error travels inwards by at most one kernel reach per layer, the
same amounts that M_l adds up. Gradients outside the window are exactly zero.

Margins are computed from the modules themselves; a level whose path contains a module not
known to be local (attention, modules that reuse a pooling layer, functional pooling) gets no
margin and is replayed whole.

Truncated windows (the CPU default of pointwise methods such as LayerCAM, `CamSettings(exact=False)`):
a level without an exact margin whose path is still convolutional (convolutions, pooling, upsampling: no
attention) is replayed on a crop of the box grown by a margin (`TRUNCATE`) instead: the box's gradient
reaches the whole image through the coarsest levels, but most of it lies near the box. Gradients outside
the crop are then zero and those near its edges approximate; measured on generated scenes against the
whole replay (examples/README.md, "Speed"): per-box correlation of the maps median >= 0.99, 10th
percentile >= 0.97. Methods whose weights sum the gradient over the image (Grad-CAM++) lose too much.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from ..model.adapter import ModelAdapter, layer_inputs
from ..model.obb import angle_branch
from ..model.pose import keypoint_branch

# Modules whose forward only composes their children with pointwise ops, split, concat and add.
_LOCAL_COMPOSITES = {
    "Conv", "DWConv", "RepConv", "C2f", "C3k2", "C3k", "C3", "C2", "C2fCIB", "CIB", "RepVGGDW", "Bottleneck",
    "RepBottleneck", "RepCSP", "RepNCSPELAN4", "ELAN1", "SCDown", "Concat", "Sequential", "ModuleList",
}
# Modules that are not known to be local but still act like convolutions (bounded, translation-equivariant
# reads): a level whose path has only these and local modules can be truncated.
_CONVOLUTIONAL = {"SPPF", "SPP", "MaxPool2d", "AvgPool2d", "Upsample"}
# Truncated windows: the box grown on each side by (factor of its longer side, at least these pixels); chosen
# over (0.25, 32), which is 20 % faster but moved more peaks (examples/README.md, "Speed").
TRUNCATE = (0.5, 64.0)
_POINTWISE = {
    "BatchNorm2d", "Identity", "SiLU", "ReLU", "ReLU6", "LeakyReLU", "Sigmoid", "Hardswish", "Hardsigmoid", "GELU",
    "Tanh", "Mish", "Dropout", "Dropout2d",
}


def _conv_reach(m: nn.Conv2d) -> float:
    """How many input cells beyond its own an output cell reads (largest over axes and sides)."""
    reach = 0
    for k, d, p in zip(m.kernel_size, m.dilation, _pair(m.padding, m.kernel_size, m.dilation)):
        reach = max(reach, p, d * (k - 1) - p)
    return reach


def _pair(padding, kernel, dilation):
    if isinstance(padding, str):  # "same" / "valid"
        return [d * (k - 1) // 2 if padding == "same" else 0 for k, d in zip(kernel, dilation)]
    return padding


def module_reach(module: nn.Module) -> float | None:
    """Sum over the module's convolutions of their reach, in units of the module's coarsest stride.

    None when the module contains anything not known to act locally. A sum over all
    convolutions bounds the reach of any path through the module.
    """
    total = 0.0
    for m in module.modules():
        name = type(m).__name__
        if isinstance(m, nn.Conv2d):
            total += _conv_reach(m)
        elif name not in _LOCAL_COMPOSITES and name not in _POINTWISE:
            return None
    return total


def module_convolutional(module: nn.Module) -> bool:
    """Whether the module contains only local modules, pooling and upsampling (no attention): its reads
    are bounded and translation-equivariant, so truncating its input changes what lies near the crop most."""
    return all(isinstance(m, nn.Conv2d) or type(m).__name__ in _LOCAL_COMPOSITES | _POINTWISE | _CONVOLUTIONAL
               for m in module.modules())


@dataclass(frozen=True)
class LevelWindows:
    """Per level: the margin (pixels) around an anchor's cell, or None; `align` the crop grid (pixels)."""

    margins: list[float | None]
    align: int
    layers: list[set[int]]  # per level, the replayed layers its head input depends on
    truncatable: list[bool]  # per level, whether its path is convolutional (a truncated window may be used)


def level_windows(adapter: ModelAdapter, start: int, seed_root: bool, layer_strides: dict[int, float]) -> LevelWindows:
    """Margins for replaying from layer `start` (see the module docstring).

    layer_strides: stride in pixels of each layer output the replay reads or writes (index -> px).
    """
    inputs = {i: _inputs(adapter, i) for i in range(start, len(adapter.layers) - 1)}
    first = start + 1 if seed_root else start
    reach: dict[int, float | None] = {}
    for i in range(first, len(adapter.layers) - 1):
        layer = adapter.layers[i]
        if isinstance(layer, nn.Upsample):
            reach[i] = None if layer.mode != "nearest" else max(layer_strides[j] for j in inputs[i])
        else:
            r = module_reach(layer)
            reach[i] = None if r is None else r * layer_strides[i]
    margins, needed, truncatable = [], [], []
    for lvl, (j, own) in enumerate(zip(adapter.head_inputs, head_reach(adapter))):
        layers = _ancestors(j, inputs, first)
        if own is None or any(reach[i] is None for i in layers):
            margins.append(None)
        else:
            need = {j: own * adapter.strides[lvl]}
            for i in sorted(layers, reverse=True):  # from the head input back to the replay's inputs
                for src in inputs[i]:
                    need[src] = max(need.get(src, 0.0), need[i] + reach[i])
            margins.append(max(need.values()))
        needed.append(layers)
        truncatable.append(own is not None and all(module_convolutional(adapter.layers[i]) for i in layers))
    align = int(max(layer_strides.values()))
    return LevelWindows(margins, align, needed, truncatable)


def head_reach(adapter: ModelAdapter) -> list[int | None]:
    """Per level, how many cells around an anchor its head branches (box and class) read; None if unknown."""
    head = adapter.head
    if getattr(adapter, "task", "detect") == "classify":  # one image-level prediction: nothing local
        return [None] * len(adapter.head_inputs)
    box_head = head.one2one_cv2 if adapter.end2end else head.cv2
    cls_head = head.one2one_cv3 if adapter.end2end else head.cv3
    angle_head = angle_branch(head, adapter.end2end)  # OBB heads: the angle branch is read too
    kpt_head = keypoint_branch(head, adapter.end2end)  # pose heads: the keypoint branch too
    out = []
    for lvl in range(len(adapter.head_inputs)):
        reaches = [module_reach(box_head[lvl]), module_reach(cls_head[lvl])]
        reaches += [] if angle_head is None else [module_reach(angle_head[lvl])]
        reaches += [] if kpt_head is None else [module_reach(kpt_head[lvl])]
        out.append(None if any(r is None for r in reaches) else int(math.ceil(max(reaches))))
    return out


def _inputs(adapter: ModelAdapter, i: int) -> list[int]:
    return layer_inputs(adapter.layers[i].f, i)


def _ancestors(j: int, inputs: dict[int, list[int]], first: int) -> set[int]:
    """Replayed layers (>= first) that layer j's output depends on, j included."""
    out, todo = set(), [j]
    while todo:
        i = todo.pop()
        if i >= first and i not in out:
            out.add(i)
            todo.extend(inputs[i])
    return out


def anchor_cell(grids: Sequence[tuple[int, int]], level: int, anchor: int) -> tuple[int, int]:
    """(row, column) of `anchor` (an index on the head's prediction axis) in its level's grid;
    `grids` are the levels' (h, w)."""
    offset = sum(h * w for h, w in grids[:level])
    return divmod(anchor - offset, grids[level][1])


def window(cell_y: int, cell_x: int, stride: float, margin: float, align: int, size: tuple[int, int]):
    """(y0, y1, x0, x1) pixels: the anchor cell plus `margin`, widened to multiples of `align`, clipped."""
    def axis(cell: int, n: int) -> tuple[int, int]:
        lo = math.floor((cell * stride - margin) / align) * align
        hi = math.ceil(((cell + 1) * stride + margin) / align) * align
        return max(0, lo), min(n, hi)

    y0, y1 = axis(cell_y, size[0])
    x0, x1 = axis(cell_x, size[1])
    return y0, y1, x0, x1


class WindowPlan:
    """Window geometry for one input size: which detections get a window, and crop/scatter helpers.

    Built from the captured layer outputs (their strides) and target activations (their shapes).
    `usable` is False when windows cannot apply (non-tensor outputs, sizes not multiples of the
    coarsest stride); detections whose window would cover more than `max_fraction` of the image
    are replayed whole, where sharing one replay is cheaper. `truncate` (factor, pixels) allows
    truncated windows (module docstring) for levels without an exact one; None: exact windows only.
    """

    def __init__(self, adapter: ModelAdapter, start: int, seed_root: bool, inputs: list[int], outputs: list,
                 acts: list, size: tuple[int, int], max_fraction: float = 0.5,
                 truncate: tuple[float, float] | None = None):
        self.size, self.max_fraction, self.usable = tuple(size), max_fraction, False
        self.truncate, self.head_reach = truncate, head_reach(adapter)
        used = sorted(set(inputs) | set(range(start, len(adapter.layers) - 1)))
        strides = {}
        for j in used:
            s = self._stride(outputs[j])
            if s is None:
                return
            strides[j] = s
        self.act_strides = [self._stride(a) for a in acts]
        if any(s is None for s in self.act_strides):
            return
        self.levels = level_windows(adapter, start, seed_root, strides)
        if any(n % self.levels.align for n in self.size):
            return
        self.strides = [float(s) for s in adapter.strides]
        self.grids = [tuple(outputs[j].shape[-2:]) for j in adapter.head_inputs]
        self.usable = True

    def _stride(self, t) -> float | None:
        """Pixels per cell of a (B, C, h, w) tensor when it tiles the input exactly, else None."""
        if not isinstance(t, torch.Tensor) or t.ndim != 4:
            return None
        sy, sx = self.size[0] / t.shape[-2], self.size[1] / t.shape[-1]
        return sy if sy == sx and sy == int(sy) else None

    def window_of(self, level: int, anchor: int, box=None):
        """(y0, y1, x0, x1) pixels for a detection at `anchor` of `level`, or None (replay it whole): its
        exact window, else (given its xyxy `box` and a plan that truncates) its truncated window."""
        margin = self.levels.margins[level] if self.usable else None
        if margin is None:
            return None if box is None or not self.usable else self.truncated_window(level, anchor, box)
        gy, gx = anchor_cell(self.grids, level, anchor)
        win = window(gy, gx, self.strides[level], margin, self.levels.align, self.size)
        area = (win[1] - win[0]) * (win[3] - win[2])
        return win if area <= self.max_fraction * self.size[0] * self.size[1] else None

    def truncated_window(self, level: int, anchor: int, box):
        """(y0, y1, x0, x1) pixels of a truncated window (module docstring) for a detection with xyxy `box`,
        or None (replay it whole: no truncation for its level, or a window over `max_fraction` of the image).

        The box and its anchor cell grown by `truncate` (factor of the box's longer side, at least a minimum
        in pixels and the head's reach), aligned to the coarsest stride, and shifted (not clipped) to lie in
        the image, so that windows of equal boxes have equal sizes and are replayed as one batch."""
        if self.truncate is None or not self.levels.truncatable[level]:
            return None
        factor, least = self.truncate
        gy, gx = anchor_cell(self.grids, level, anchor)
        s, a = self.strides[level], self.levels.align
        x0, y0, x1, y1 = min(box[0], gx * s), min(box[1], gy * s), max(box[2], (gx + 1) * s), max(box[3], (gy + 1) * s)
        margin = max(least, factor * max(x1 - x0, y1 - y0), (self.head_reach[level] or 0) * s)

        def axis(lo: float, hi: float, n: int) -> tuple[int, int]:
            lo, hi = math.floor((lo - margin) / a) * a, math.ceil((hi + margin) / a) * a
            if hi - lo >= n:
                return 0, n
            shift = max(0, -lo) - max(0, hi - n)
            return lo + shift, hi + shift

        win = (*axis(y0, y1, self.size[0]), *axis(x0, x1, self.size[1]))
        area = (win[1] - win[0]) * (win[3] - win[2])
        return win if area <= self.max_fraction * self.size[0] * self.size[1] else None

    def local_cell(self, level: int, anchor: int, win) -> tuple[int, int]:
        """The anchor's (row, column) in the level's grid of the window's crops."""
        gy, gx = anchor_cell(self.grids, level, anchor)
        s = self.strides[level]
        return gy - int(win[0] // s), gx - int(win[2] // s)

    def local_anchor(self, level: int, anchor: int, win) -> int:
        """The anchor's index on the prediction axis of head outputs computed on the window's crops."""
        y0, y1, x0, x1 = win
        before = sum(int((y1 - y0) // s) * int((x1 - x0) // s) for s in self.strides[:level])
        gy, gx = self.local_cell(level, anchor, win)
        return before + gy * int((x1 - x0) // self.strides[level]) + gx

    def crop(self, t: torch.Tensor, row: int, win) -> torch.Tensor:
        """Row `row` of a (B, C, h, w) tensor cropped to the window: (1, C, h', w') (a view)."""
        y0, y1, x0, x1 = win
        s = self.size[0] // t.shape[-2]
        return t[row:row + 1, :, y0 // s:y1 // s, x0 // s:x1 // s]

    def act_window(self, k: int, win) -> tuple[int, int, int, int]:
        """The window in cells of target layer k's grid: (y0, y1, x0, x1)."""
        s = int(self.act_strides[k])
        return win[0] // s, win[1] // s, win[2] // s, win[3] // s

    def scatter(self, grad: torch.Tensor | None, k: int, act: torch.Tensor, win) -> torch.Tensor:
        """A window gradient of target layer k placed into zeros shaped like one row of its activation `act`."""
        full = act.new_zeros((1, *act.shape[1:]))
        if grad is not None:
            y0, y1, x0, x1 = self.act_window(k, win)
            full[..., y0:y1, x0:x1] = grad
        return full
