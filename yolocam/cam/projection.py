"""Layer maps to output space in one matrix product per map: bilinear resizing as separable matrices.

Resizing a (h, w) map bilinearly to (H, W) is `Ry @ m @ Rx.T` with sparse (H, h) and (W, w)
interpolation matrices, and so is any chain of resizes and crops (letterbox removal, then the
resize back to the original image). The `sum` fusion of rectified layer maps of different
sizes is then one product: `[Ry_1 | Ry_2 | ...] @ [m_1 Rx_1.T; m_2 Rx_2.T; ...]`. This equals
`F.interpolate(..., mode="bilinear", align_corners=False)` per layer followed by the crop and
resize (up to float rounding), at a fraction of the cost when there are many maps.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Sequence

import numpy as np
import torch

from ..inputs.images import Letterbox
from .fusion import fuse_layer_maps, scale_to_unit_, to_original


def bilinear_matrix(n_in: int, n_out: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(n_out, n_in) weights of a 1-D bilinear resize, as `F.interpolate(align_corners=False)` computes it."""
    scale = n_in / n_out
    src = ((torch.arange(n_out, dtype=torch.float64) + 0.5) * scale - 0.5).clamp(min=0)
    i0 = src.floor().long().clamp(max=n_in - 1)
    i1 = (i0 + 1).clamp(max=n_in - 1)
    lam = (src - i0).clamp(0, 1)
    out = torch.zeros(n_out, n_in, dtype=torch.float64)
    rows = torch.arange(n_out)
    out.index_put_((rows, i0), 1 - lam, accumulate=True)
    out.index_put_((rows, i1), lam, accumulate=True)
    return out.to(device=device, dtype=dtype)


def axis_matrix(n_grid: int, n_input: int, letterbox_axis: tuple[int, int, int] | None, device) -> torch.Tensor:
    """One axis: grid cells -> input pixels, then (optionally) crop [start, start + length) and resize to `final`.

    letterbox_axis: (start, length, final) or None to stay in input space. -> (n_out, n_grid) float32.
    """
    m = bilinear_matrix(n_grid, n_input, dtype=torch.float64)
    if letterbox_axis is not None:
        start, length, final = letterbox_axis
        m = bilinear_matrix(length, final, dtype=torch.float64) @ m[start:start + length]
    return m.to(device=device, dtype=torch.float32)


class Projector:
    """Maps (N, h_l, w_l) layer maps to (N, H_out, W_out) for one input size and optional letterbox.

    `sum_rectified` is the `sum` fusion (rectify, resize, add) fused with the resize to the output;
    `one` resizes maps of one grid size. Matrices are cached per grid size.
    """

    CHUNK_ELEMENTS = 2 ** 20  # bound on the floats of one chunk's column products (4 MB)

    def __init__(self, input_size: tuple[int, int], letterbox: Letterbox | None, device):
        self.input_size, self.letterbox, self.device = tuple(input_size), letterbox, device
        if letterbox is None:
            self.y_axis = self.x_axis = None
            self.out_size = self.input_size
        else:
            w, h = letterbox.new_unpad
            self.y_axis = (letterbox.top, h, letterbox.orig_shape[0])
            self.x_axis = (letterbox.left, w, letterbox.orig_shape[1])
            self.out_size = tuple(letterbox.orig_shape)
        self._cache: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}
        self._bands: dict[tuple, list] = {}

    def matrices(self, grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(H_out, h) and (W_out, w) matrices for a (h, w) grid."""
        if grid not in self._cache:
            self._cache[grid] = (axis_matrix(grid[0], self.input_size[0], self.y_axis, self.device),
                                 axis_matrix(grid[1], self.input_size[1], self.x_axis, self.device))
        return self._cache[grid]

    def one(self, maps: torch.Tensor, out: torch.Tensor | None = None, zeroed: bool = False,
            unit: bool = False) -> torch.Tensor:
        """Resize (N, h, w) maps to (N, H_out, W_out) (into `out` when given, `zeroed` if it holds zeros), a
        chunk of maps at a time; `unit`: each result then divided by its maximum (all-zero maps stay zero).

        Maps whose non-zero cells lie in a block of at most `SPARSE_FRACTION` of the grid (a box's window)
        are resized block by block (`_block_products`): outside the pixels the block's interpolation weights
        reach, the result is exactly zero."""
        grid = tuple(maps.shape[-2:])
        ry, rx = self.matrices(grid)
        if out is None:
            out = maps.new_empty((maps.shape[0], ry.shape[0], rx.shape[0]), dtype=torch.float32)
        dense = self._block_products(grid, ry, rx, maps, out, zeroed, unit)
        step = self.chunk_rows(grid[0] * rx.shape[0])
        every = len(dense) == len(out)
        for lo in range(0, len(dense), step):  # the (n, h, W_out) column products of a chunk only
            rows = dense[lo:lo + step]
            part = maps[lo:lo + step] if every else maps.index_select(0, rows)
            cols = self._cols_product(grid, rx, part.float())
            if every:
                done = self._rows_product((grid,), ry, cols, out=out[lo:lo + step])
                if unit:
                    scale_to_unit_(done)
            else:
                done = self._rows_product((grid,), ry, cols)
                out.index_copy_(0, rows, scale_to_unit_(done) if unit else done)
        return out

    def zeros(self, n: int) -> torch.Tensor:
        """(n, H_out, W_out) float32 zeros for `one(..., zeroed=True)`. On CPU from numpy's calloc: fresh pages
        the system hands out zeroed, so the parts a box's block never writes cost neither a fill nor a page
        fault until they are read (torch.zeros writes every page: 16k page faults for 40 maps at 640)."""
        if torch.device(self.device).type == "cpu":
            return torch.from_numpy(np.zeros((n, *self.out_size), dtype=np.float32))
        return torch.zeros((n, *self.out_size), device=self.device)

    SPARSE_FRACTION = 0.25

    def _block_products(self, grid, ry, rx, maps: torch.Tensor, out: torch.Tensor, zeroed: bool = False,
                        unit: bool = False) -> torch.Tensor:
        """Resize the maps whose non-zero cells fit a small block: `out[k]` zeroed (unless `zeroed`), then the
        block's product written where its weights reach (`unit`: divided by its maximum). -> the indices (n,)
        of the other maps, for the banded products."""
        n = maps.shape[0]
        if n == 0:
            return torch.zeros(0, dtype=torch.long, device=maps.device)
        rows_nz, cols_nz = maps.ne(0).any(2), maps.ne(0).any(1)  # (N, h), (N, w)
        extents = torch.stack([_first(rows_nz), _last(rows_nz), _first(cols_nz), _last(cols_nz)], 1).tolist()
        y_span, x_span = self._spans(ry, ("ry", grid)), self._spans(rx, ("rx", grid))
        dense = []
        for k, (r0, r1, c0, c1) in enumerate(extents):
            if r1 < r0:  # an all-zero map
                if not zeroed:
                    out[k].zero_()
                continue
            if (r1 - r0 + 1) * (c1 - c0 + 1) > self.SPARSE_FRACTION * grid[0] * grid[1]:
                dense.append(k)
                continue
            y0, y1, x0, x1 = y_span[0][r0], y_span[1][r1], x_span[0][c0], x_span[1][c1]
            if not zeroed:
                out[k].zero_()
            if y1 > y0 and x1 > x0:  # else the block lies where no output pixel reads (a letterbox's padding)
                block = ry[y0:y1, r0:r1 + 1] @ maps[k, r0:r1 + 1, c0:c1 + 1].float() @ rx[x0:x1, c0:c1 + 1].T
                out[k, y0:y1, x0:x1] = scale_to_unit_(block[None])[0] if unit else block
        return torch.tensor(dense, dtype=torch.long, device=maps.device)

    def _spans(self, matrix: torch.Tensor, key: tuple) -> tuple[list[int], list[int]]:
        """For the banded (n_out, n_grid) `matrix`: per grid cell i, the first output index that any cell >= i
        reaches, and one past the last that any cell <= i reaches; the output rows a block of cells
        [i, j] reaches lie within [first[i], last[j]) (cells that reach none, a letterbox's padding, skipped)."""
        if key not in self._bands:
            nz = matrix.ne(0).T  # (n_grid, n_out)
            first = _first(nz).flip(0).cummin(0).values.flip(0)
            last = (_last(nz) + 1).cummax(0).values
            self._bands[key] = (first.tolist(), last.tolist())
        return self._bands[key]

    def _cols_product(self, grid: tuple[int, int], rx: torch.Tensor, maps: torch.Tensor, block: int = 64) -> torch.Tensor:
        """(N, h, w) @ (W_out, w).T -> (N, h, W_out), skipping the zeros of the banded `rx`: each block of
        `block` output columns reads only the grid columns its weights touch (a dense product costs w
        multiply-adds per output value, 16x the work at stride 4)."""
        key = ("cols", grid)
        if key not in self._bands:
            bands = []
            for c0 in range(0, rx.shape[0], block):
                part = rx[c0:c0 + block]
                idx = part.abs().sum(0).nonzero().view(-1)
                bands.append((c0, c0 + part.shape[0], int(idx[0]), int(idx[-1]) + 1, part[:, idx[0]:idx[-1] + 1].T.contiguous()))
            self._bands[key] = bands
        out = maps.new_empty((*maps.shape[:-1], rx.shape[0]))
        for c0, c1, i0, i1, weights in self._bands[key]:
            out[..., c0:c1] = maps[..., i0:i1] @ weights
        return out

    def chunk_rows(self, elements_per_map: int) -> int:
        """Maps per chunk whose intermediate of `elements_per_map` floats each stays within `CHUNK_ELEMENTS`."""
        return max(1, self.CHUNK_ELEMENTS // max(1, elements_per_map))

    def sum_rectified(self, maps: Sequence[torch.Tensor]) -> torch.Tensor:
        """Sum over layers of the rectified maps resized to the output: [(N, h_l, w_l)] -> (N, H_out, W_out)."""
        by_grid: "OrderedDict[tuple[int, int], torch.Tensor]" = OrderedDict()
        for m in maps:  # same-size layers are added before resizing (resizing is linear)
            r = torch.nan_to_num(m.float()).clamp_(min=0)
            grid = tuple(m.shape[-2:])
            by_grid[grid] = r if grid not in by_grid else by_grid[grid] + r
        key = tuple(by_grid)
        mats = [self.matrices(grid) for grid in key]
        rows = torch.cat([ry for ry, _ in mats], 1)
        first = next(iter(by_grid.values()))
        out = first.new_empty((first.shape[0], rows.shape[0], mats[0][1].shape[0]))
        step = max(1, self.CHUNK_ELEMENTS // max(1, rows.shape[1] * out.shape[2]))
        for lo in range(0, len(out), step):  # chunks of maps: the (N, K, W_out) intermediate stays small
            cols = torch.cat([m[lo:lo + step] @ rx.T for m, (_, rx) in zip(by_grid.values(), mats)], 1)
            out[lo:lo + step] = self._rows_product(key, rows, cols)
        return out

    def _rows_product(self, key: tuple, rows: torch.Tensor, cols: torch.Tensor, block: int = 32,
                      out: torch.Tensor | None = None) -> torch.Tensor:
        """(H_out, K) @ (N, K, W_out) -> (N, H_out, W_out), skipping the zeros of the banded `rows`.

        Each block of `block` output rows reads only the few grid rows its interpolation weights
        touch, so the product costs a small multiple of the output size instead of K per pixel.
        """
        if key not in self._bands:
            bands = []
            for r0 in range(0, rows.shape[0], block):
                part = rows[r0:r0 + block]
                idx = part.abs().sum(0).nonzero().view(-1)
                bands.append((r0, r0 + part.shape[0], idx, part[:, idx].contiguous()))
            self._bands[key] = bands
        if out is None:
            out = cols.new_empty((cols.shape[0], rows.shape[0], cols.shape[2]))
        for r0, r1, idx, weights in self._bands[key]:
            out[:, r0:r1] = weights @ cols.index_select(1, idx)
        return out


def _first(mask: torch.Tensor) -> torch.Tensor:
    """Per row of an (N, n) bool mask, the index of its first True (n when none)."""
    n = mask.shape[-1]
    idx = torch.arange(n, device=mask.device).expand_as(mask)
    return torch.where(mask, idx, n).amin(-1)


def _last(mask: torch.Tensor) -> torch.Tensor:
    """Per row of an (N, n) bool mask, the index of its last True (-1 when none)."""
    idx = torch.arange(mask.shape[-1], device=mask.device).expand_as(mask)
    return torch.where(mask, idx, -1).amax(-1)


class ProjectorCache:
    """A few `Projector`s kept by (input size, letterbox), so repeated image shapes reuse matrices."""

    def __init__(self, size: int = 8):
        self.size = size
        self._items: "OrderedDict[tuple, Projector]" = OrderedDict()

    def get(self, input_size: tuple[int, int], letterbox: Letterbox | None, device) -> Projector:
        key = (tuple(input_size), None if letterbox is None else (letterbox.orig_shape, letterbox.new_unpad,
                                                                 letterbox.top, letterbox.left), str(device))
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        proj = self._items[key] = Projector(input_size, letterbox, device)
        while len(self._items) > self.size:
            self._items.popitem(last=False)
        return proj


def assemble_maps(layer_maps: Sequence[torch.Tensor], dets: Sequence[Sequence], n_comp: int, fuse: str,
                  size: tuple[int, int], letterboxes, level_strides: Sequence[float], projectors: ProjectorCache,
                  device, exact: bool = False) -> list[torch.Tensor]:
    """Per image the fused, normalised maps (n_i, H, W): input space, or original space with letterboxes.

    layer_maps: per layer (jobs, h_l, w_l) raw maps, jobs in (detection, component) order over the
    batch; dets: per image its detections. `sum`, `origin` and `aligned` project each job's layer
    maps straight to the output space in one matrix product; `gate` multiplies at the finest layer's
    own grid, then projects (`exact`: at input resolution, as `fuse_layer_maps` defines it: the product
    of the resized maps rather than the resized product, 16x the pixels at stride 4); `max` and
    multi-component targets (whose components are max-combined) fuse in input space first.
    """
    out, i = [], 0
    for b, image_dets in enumerate(dets):
        lb = None if letterboxes is None else letterboxes[b]
        n = len(image_dets) * n_comp
        if n == 0:
            out.append(torch.zeros((0, *(size if lb is None else lb.orig_shape)), device=device))
            continue
        maps = [m[i:i + n] for m in layer_maps]
        i += n
        in_input_space = fuse == "max" or (fuse == "gate" and exact)
        direct = lb is not None and n_comp == 1 and not in_input_space
        proj = projectors.get(size, lb if direct else None, device)
        if in_input_space:
            fused = fuse_layer_maps(maps, fuse, size, [size[0] / m.shape[-2] for m in maps], None)
        elif fuse == "gate":
            fused = _gate(maps, proj, size)
        elif fuse == "origin":
            job_strides = [level_strides[d.level] for d in image_dets for _ in range(n_comp)]
            fused = _origin(maps, proj, job_strides, size)
        else:
            fused = scale_to_unit_(proj.sum_rectified(maps))  # rectified and resized: >= 0, finite
        if n_comp > 1:
            fused = fused.view(-1, n_comp, *fused.shape[-2:]).amax(1)  # components max-combined
        if lb is not None and not direct:
            fused = to_original(fused, lb)
        out.append(fused)
    return out


def _gate(maps, proj: Projector, size) -> torch.Tensor:
    """`gate` fusion at the finest layer's grid, projected to the output: (jobs, H_out, W_out), each map
    scaled to a maximum of 1. Jobs go a chunk at a time, so only the output is full-sized (the grid's
    products, the coarser maps resized to it and the column products stay a chunk's size)."""
    grid = max((tuple(m.shape[-2:]) for m in maps), key=lambda g: g[0] * g[1])
    strides = [size[0] / m.shape[-2] for m in maps]
    n = maps[0].shape[0]
    out = proj.zeros(n)
    step = proj.chunk_rows(grid[0] * grid[1] * 4)  # a few grid-sized temporaries per map
    for lo in range(0, n, step):
        part = fuse_layer_maps([m[lo:lo + step] for m in maps], "gate", grid, strides, None)
        proj.one(part, out=out[lo:lo + step], zeroed=True, unit=True)
    return out


def _origin(maps, proj: Projector, job_strides: Sequence[float], size) -> torch.Tensor:
    """`origin` fusion: each job's map from the layer whose stride is closest to its detection's."""
    log_layer = torch.tensor([math.log2(size[0] / m.shape[-2]) for m in maps])
    log_job = torch.tensor([math.log2(s) for s in job_strides])
    pick = (log_job[:, None] - log_layer[None]).abs().argmin(1)
    out = torch.empty((len(pick), *proj.out_size), device=maps[0].device)
    for k, m in enumerate(maps):
        rows = (pick == k).nonzero().view(-1).to(m.device)
        if len(rows):
            out[rows] = scale_to_unit_(proj.one(torch.nan_to_num(m[rows].float()).clamp_(min=0)))
    return out


def content_region(maps: torch.Tensor, lb: Letterbox) -> torch.Tensor:
    """(N, H_in, W_in) input-space maps cut to the letterbox content (the padding removed): (N, h, w).

    This is the compact form of an image's maps: the full-resolution map is this region resized
    (bilinear, half-pixel centres) to `lb.orig_shape` and scaled to a maximum of 1, which equals the
    direct projection above up to float rounding, since everything before the normalisation is linear.
    """
    w, h = lb.new_unpad  # a centre crop (classification, negative offsets): the whole input is content
    return maps[:, max(lb.top, 0):lb.top + h, max(lb.left, 0):lb.left + w]
