"""Replaying the layers after the captured forward pass, with autograd, to get each job's gradients.

`ReplayStrategies` is mixed into `CamEngine` (`engine.py`); it holds the two gradient strategies
and what they share:
- `batched` (default on CUDA): one replay with a row ("copy") per job; row k gets job k's target;
  one `torch.autograd.grad` of the summed targets gives every job its own gradient, because rows
  never interact (eval mode). Jobs of one level skip the other levels' head branches.
- `loop` (default on CPU): one batch-1 replay per image, then one retained backward per job; jobs
  whose receptive field covers a small window are replayed on crops of that window instead
  (`windows.py`), equally sized crops as one batch, with exactly the same gradients.
Local targets read the head evaluated on a few cells around their anchor (`head_crops.py`).

The mixin reads the engine's `adapter`, `method`, `target`, `layers`, `reshape`, `strategy`,
`start`, `seed_root`, `seed`, `memory_mb`, `max_batch` and its `_job_bytes` cache.
"""

from __future__ import annotations

import ctypes
import functools
import sys
from dataclasses import replace

import torch

from ..model.adapter import layer_inputs
from ..model.hooks import LayerHooks
from ..model.layers import flatten_output, rebuild_output
from ..model.targets import Jobs
from .head_crops import local_targets
from .windows import anchor_cell


class ReplayStrategies:
    """Gradient strategies of `CamEngine`; see the module docstring."""

    def _gradients(self, hooks: LayerHooks, outputs: list, rows: torch.Tensor, jobs: Jobs) -> list[torch.Tensor]:
        """Gradients (S, n, C, H, W) per target layer (after the reshape transform) for n jobs."""
        per_sample = []
        for s in range(max(1, self.method.samples)):
            hooks.noise_seed = self.seed * 10_000 + s  # noise of its own per sample (`LayerHooks.prepare`)
            per_sample.append(self._replay(hooks, outputs, rows, jobs, self.method.noise))
        return [torch.stack([s[k] for s in per_sample]) for k in range(len(self.layers))]

    def _replay(self, hooks, outputs, rows, jobs, noise) -> list[torch.Tensor]:
        """Gradients (n, C, H, W) per target layer for n jobs, by the engine's strategy."""
        if self.strategy == "loop":
            per_job = self._replay_loop(hooks, outputs, rows, jobs, noise, lambda k, grads: grads)
            return [torch.cat([g[i] for g in per_job]) for i in range(len(self.layers))]
        return self._replay_batched(hooks, outputs, rows, jobs, noise)

    def _replay_batched(self, hooks, outputs, rows, jobs, noise) -> list[torch.Tensor]:
        """One replay with a row per job and one backward for all (the GPU path)."""
        levels = {d.level for d in jobs.detections}
        level = levels.pop() if len(levels) == 1 and self.target.local else None
        with torch.enable_grad():
            replay, live, tensors = self._replay_forward(hooks, outputs, rows, noise)
            if self._reach(level) is None:
                values = self.target(self._head(replay, level), jobs)
            else:
                grids = [tuple(outputs[j].shape[-2:]) for j in self.adapter.head_inputs]
                cells = [anchor_cell(grids, d.level, d.anchor) for d in jobs.detections]
                values = self._local_values(replay, level, jobs, range(len(cells)), cells)
            grads = _grad(values, tensors)
        hooks.outputs.clear()  # the replay's live outputs (and so its graph) are not kept past the backward
        return self._structure(live, tensors, grads)

    def _replay_loop(self, hooks, outputs, rows, jobs, noise, consume, plan=None, acts=None,
                     window_consumer=False) -> list:
        """Per image one batch-1 replay, then one retained backward per job (the CPU path: no
        forward is repeated per job, and local targets skip the other levels' head branches).
        With a window `plan`, jobs whose receptive-field window is small are instead replayed on
        crops, a batch of equally sized crops at a time (`_replay_windows`).

        Returns `consume(k, grads_k)` per job k, grads_k being its (1, C, H, W) gradient per layer.
        """
        per_job: list = [None] * len(jobs.detections)
        windowed: dict = {}
        whole = []
        for k, det in enumerate(jobs.detections):
            win = None if plan is None else plan.window_of(det.level, det.anchor, det.box)
            if win is None:
                whole.append(k)
            else:
                windowed.setdefault((det.level, win[1] - win[0], win[3] - win[2]), []).append((k, win))
        for (level, h, w), members in windowed.items():
            step = self._window_rows(hooks, outputs, h * w, plan.size[0] * plan.size[1]) if len(members) > 1 else 1
            for lo in range(0, len(members), step):
                self._replay_windows(hooks, outputs, acts, rows, level, members[lo:lo + step], plan, jobs, consume,
                                     per_job, window_consumer)
        for image in sorted({int(rows[k]) for k in whole}):
            self._replay_image(hooks, outputs, rows, jobs, noise, consume, [k for k in whole if int(rows[k]) == image],
                               per_job)
            if rows.device.type == "cpu":  # the image's graph is gone now: its pages go back to the system
                release_freed_memory()
        return per_job

    def _replay_image(self, hooks, outputs, rows, jobs, noise, consume, ks: list[int], per_job: list) -> None:
        """Jobs `ks` of one image: one batch-1 replay, one retained backward each (`_replay_loop`). The
        replay's graph is gone when this returns (the hooks' live outputs are dropped too), so images and
        chunks never hold two graphs at once."""
        groups: dict = {}
        for k in ks:
            groups.setdefault(jobs.detections[k].level if self.target.local else None, []).append(k)
        grids = [tuple(outputs[j].shape[-2:]) for j in self.adapter.head_inputs]
        try:
            with torch.enable_grad():
                replay, live, tensors = self._replay_forward(hooks, outputs, rows[ks[:1]], noise)
                for level, members in groups.items():
                    head = self._head(replay, level) if self._reach(level) is None else None
                    for k in members:
                        one = Jobs.build([jobs.detections[k]], [int(jobs.component[k])], rows.device)
                        value = self.target(head, one) if head is not None else self._local_values(
                            replay, level, one, [0], [anchor_cell(grids, one.detections[0].level, one.detections[0].anchor)])
                        grads = _grad(value, tensors, retain_graph=True)
                        per_job[k] = consume(k, self._structure(live, tensors, grads))
        finally:
            hooks.outputs.clear()

    def _window_rows(self, hooks, outputs, crop_area: int, image_area: int) -> int:
        """Window crops of `crop_area` pixels replayed as one batch: `max_batch`, else as many crops as fit
        the pixels of the whole-image rows `memory_mb` allows (`chunk_size` of the batched strategy)."""
        if self.max_batch:
            return max(1, int(self.max_batch))
        rows = self.memory_mb * 2**20 / self.bytes_per_job(hooks, outputs)
        return max(1, int(rows * image_area // max(1, crop_area)))

    def _replay_windows(self, hooks, outputs, acts, rows, level, members, plan, jobs, consume, per_job,
                        window_consumer=False) -> None:
        """Replay the layers level `level` depends on, on a batch of same-sized window crops (one row
        per member job), take one backward of the summed targets (rows never interact), and scatter
        each row's gradients back to full size (`window_consumer`: `consume(k, grads, window)` gets
        the window's gradients, None for layers none reached, and places the result itself)."""
        adapter, start = self.adapter, self.start

        def crops(t):
            return torch.cat([plan.crop(t, int(rows[k]), win) for k, win in members])

        replay = [None] * len(adapter.layers)
        for j in set(self._needed_before(start)) | set(adapter.head_inputs):  # other levels' inputs: layout only
            replay[j] = crops(outputs[j])
        hooks.outputs.clear()
        hooks.replay = True
        try:
            with torch.enable_grad():
                first = start
                if self.seed_root:
                    replay[start] = hooks.outputs[0] = hooks.prepare(crops(outputs[start]), noisy=False)
                    first = start + 1
                adapter.run_layers(None, replay, start=first, only=plan.levels.layers[level])
                present = [t for t in range(len(self.layers)) if t in hooks.outputs]
                dets = [jobs.detections[k] for k, _ in members]
                comps = [int(jobs.component[k]) for k, _ in members]
                if self._reach(level) is None:
                    local = [replace(d, anchor=plan.local_anchor(level, d.anchor, win)) for d, (_, win) in zip(dets, members)]
                    values = self.target(self._head(replay, level), Jobs.build(local, comps, rows.device))
                else:
                    cells = [plan.local_cell(level, d.anchor, win) for d, (_, win) in zip(dets, members)]
                    values = self._local_values(replay, level, Jobs.build(dets, comps, rows.device),
                                                range(len(members)), cells)
                grads = _grad(values, [hooks.outputs[t] for t in present])
        finally:
            hooks.replay = False
            hooks.outputs.clear()
        by_layer = dict(zip(present, grads))
        for i, (k, win) in enumerate(members):
            rows_i = [None if by_layer.get(t) is None else by_layer[t][i:i + 1] for t in range(len(self.layers))]
            per_job[k] = consume(k, rows_i, win) if window_consumer else consume(
                k, [plan.scatter(g, t, acts[t], win) for t, g in enumerate(rows_i)])

    def _replay_forward(self, hooks, outputs, rows, noise) -> tuple[list, list, list[torch.Tensor]]:
        """Re-run the layers from the earliest target layer on the given rows, with autograd.

        Returns the layer outputs, each target layer's live output, and the flat list of target
        tensors to differentiate w.r.t.
        """
        adapter, start = self.adapter, self.start
        replay = [None] * len(adapter.layers)
        for j in self._needed_before(start):
            replay[j] = _index_rows(outputs[j], rows)
        hooks.replay, hooks.noise = True, noise
        try:
            first = start
            if self.seed_root:
                root = [hooks.prepare(t, noisy=True, part=i)
                        for i, t in enumerate(flatten_output(_index_rows(outputs[start], rows)))]
                replay[start] = rebuild_output(outputs[start], root)
                hooks.outputs[0] = replay[start]
                first = start + 1
            adapter.run_layers(None, replay, start=first)
        finally:
            hooks.replay, hooks.noise = False, 0.0
        live = [hooks.outputs[k] for k in range(len(self.layers))]
        return replay, live, [t for out in live for t in flatten_output(out)]

    def _reach(self, level: int | None) -> int | None:
        """Cells a local target at `level` reads around its anchor, or None (evaluate the whole head)."""
        return None if level is None or not self.target.local else self.head_reach[level]

    def _local_values(self, replay, level, jobs: Jobs, rows, cells) -> torch.Tensor:
        """Targets (n,) of local jobs at `level`, read from head crops around their cells (`head_crops.py`)."""
        items = [(r, d, int(c), cell) for r, d, c, cell in zip(rows, jobs.detections, jobs.component.tolist(), cells)]
        return local_targets(self.adapter, self.target, replay, level, self._reach(level), items)

    def _head(self, replay: list, level: int | None):
        """Head outputs; with a `level`, only that level's branches run (and get a backward pass),
        which only a target local to that level allows."""
        return self.adapter.head_outputs(replay, level, boxes=self.target.needs_boxes,
                                         masks=getattr(self.target, "needs_masks", False))

    def _structure(self, lives: list, tensors, grads) -> list[torch.Tensor]:
        """Flat gradients -> one reshaped (n, C, H, W) gradient per target layer."""
        grads = [torch.zeros_like(t) if g is None else g for t, g in zip(tensors, grads)]
        out, i = [], 0
        for live in lives:
            n = len(flatten_output(live))
            out.append(self.reshape(rebuild_output(live, grads[i:i + n])).detach())
            i += n
        return out

    def _needed_before(self, start: int) -> list[int]:
        """Indices < start whose outputs the layers from `start` on read."""
        needed = set()
        for i in range(start, len(self.adapter.layers)):
            for j in layer_inputs(self.adapter.layers[i].f, i):
                if j < start:
                    needed.add(j)
        if self.seed_root:
            needed.discard(start)
        return sorted(needed)

    def chunk_size(self, hooks: LayerHooks, outputs: list) -> int:
        """Jobs per batched replay so that its extra memory stays under `memory_mb` (at least 1).

        The loop strategy without gradient samples keeps one image's replay at a time and turns each job's
        gradients into layer maps at once, so its memory does not grow with the jobs: all of them form one
        chunk (one replay per image, not one per chunk); its window crops are batched by `_window_rows`.
        """
        if self.max_batch:
            return max(1, int(self.max_batch))
        if self.strategy == "loop" and self.method.samples <= 1:
            return 1 << 62
        return max(1, int(self.memory_mb * 2**20 // self.bytes_per_job(hooks, outputs)))

    def bytes_per_job(self, hooks: LayerHooks, outputs: list) -> int:
        """Extra bytes one job (one row) adds to a batched replay, measured once per input size.

        A one-row replay is run with autograd's saved-tensor hooks counting every tensor kept for the
        backward pass (parameters excluded), plus the layer outputs, the target layers' gradients,
        and twice the largest layer output for the backward pass's transient buffers.
        """
        key = tuple(tuple(t.shape[1:]) for t in flatten_output(outputs[self.start]))
        if key not in self._job_bytes:
            params = {p.untyped_storage().data_ptr() for p in self.adapter.module.parameters()}
            kept: dict[int, int] = {}

            def count(t: torch.Tensor) -> torch.Tensor:
                storage = t.untyped_storage()
                if storage.data_ptr() not in params:
                    kept[storage.data_ptr()] = storage.nbytes()
                return t.detach()  # the tensor itself would be a cycle (its own grad_fn saves it) gc cannot see

            row = torch.zeros(1, dtype=torch.long, device=self.adapter.device)
            with torch.autograd.graph.saved_tensors_hooks(count, lambda t: t), torch.enable_grad():
                replay, _, tensors = self._replay_forward(hooks, outputs, row, 0.0)
                self.adapter.head_outputs(replay)
            hooks.outputs.clear()  # the measuring replay's graph goes with its outputs below
            largest = 0
            for t in (t for out in replay[self.start:] if out is not None for t in flatten_output(out)):
                kept[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
                largest = max(largest, t.untyped_storage().nbytes())
            grads = sum(t.numel() * t.element_size() for t in tensors)
            self._job_bytes[key] = sum(kept.values()) + grads + 2 * largest
        return self._job_bytes[key]


def release_freed_memory() -> None:
    """Hand the C heap's free pages back to the operating system (glibc's `malloc_trim`; elsewhere nothing).

    A CPU replay's graph is thousands of buffers of 1-30 MB; glibc serves those from its heap (its mmap
    threshold rises past them after the first frees) and keeps the pages once they are freed, so without
    this the process keeps the replay's size after it and the maps projected next come on top of it.
    Measured: 12 MP, imgsz 1280, 56 boxes: 260 MB returned in about 10 ms.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None).malloc_trim  # glibc; musl and others have none
    except (OSError, AttributeError):
        return None


def _grad(values: torch.Tensor, tensors: list, retain_graph: bool = False) -> list:
    """Gradients of `values.sum()` w.r.t. `tensors`, None for those it does not depend on (all None
    when it depends on none: a target that does not read the target layers, e.g. a box on a level
    that does not use them)."""
    if not values.requires_grad:
        return [None] * len(tensors)
    return list(torch.autograd.grad(values.sum(), tensors, retain_graph=retain_graph, allow_unused=True))


def _index_rows(out, rows: torch.Tensor):
    """Select batch rows of a layer output (a tensor or a structure of tensors)."""
    return rebuild_output(out, [t.index_select(0, rows) for t in flatten_output(out)])
