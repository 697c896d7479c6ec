"""The CAM engine: one forward pass, then every detection's gradients from one batched replay.

1. Capture: run the network once (no autograd), keeping every layer's output; hooks store the
   target layers' outputs (detached).
2. Select detections from the head outputs (NMS or end-to-end top-k).
3. Replay: re-run only the layers from the earliest target layer to the head, seeded from the
   captured outputs, and differentiate each (detection, component) job's target w.r.t. the
   target layers' outputs. Two strategies give the same gradients:
   - `batched` (default on CUDA): one replay with a row ("copy") per job; row k gets job k's
     target; one `torch.autograd.grad` of the summed targets gives every job its own gradient,
     because rows never interact (eval mode). Jobs are grouped by level so that the other
     levels' head branches are left out of the backward.
   - `loop` (default on CPU, where a batch row costs as much as a separate pass): one batch-1
     replay per image, then one retained backward per job.
   Parameters are frozen meanwhile, so no parameter `.grad` is touched.
4. Weight activations with gradients (the method), fuse layers, normalise.

Jobs are processed in chunks so that the replay's extra memory stays under `memory_mb`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from .adapter import ModelAdapter
from .detections import Detection, select_detections
from .errors import YolocamError
from .fusion import check_fusion, fuse_layer_maps, normalise, resize_maps
from .layers import TargetLayer, align_levels, default_reshape, flatten_output, rebuild_output
from .methods import Method
from .targets import Jobs, Target


STRATEGIES = ("auto", "batched", "loop")


class LayerHooks:
    """Forward hooks on the target modules; a context manager that always removes them.

    In capture mode each hook stores the module's output detached. In replay mode it stores the
    live output, turning tensors that carry no graph into leaves that require grad (so gradients
    can be taken w.r.t. them), and adds `noise` to the first target's output when asked.
    """

    def __init__(self, layers: Sequence[TargetLayer]):
        self.layers = list(layers)
        self.handles: list = []
        self.outputs: dict[int, object] = {}
        self.replay = False
        self.noise = 0.0

    def __enter__(self) -> "LayerHooks":
        for k, layer in enumerate(self.layers):
            self.handles.append(layer.module.register_forward_hook(self._make_hook(k)))
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def remove(self) -> None:
        """Remove every hook; safe to call twice."""
        while self.handles:
            self.handles.pop().remove()

    def _make_hook(self, k: int):
        def hook(module, inputs, output):
            if not self.replay:
                self.outputs[k] = rebuild_output(output, [t.detach() for t in flatten_output(output)])
                return None
            live = [self.prepare(t, noisy=(k == 0)) for t in flatten_output(output)]
            self.outputs[k] = rebuild_output(output, live)
            return self.outputs[k]

        return hook

    def prepare(self, t: torch.Tensor, noisy: bool) -> torch.Tensor:
        """A replayed target tensor: a grad-requiring leaf if it has no graph; plus noise if asked."""
        if not t.requires_grad and t.is_floating_point():
            t = t.detach().requires_grad_(True)
        if noisy and self.noise > 0:
            span = (t.detach().amax() - t.detach().amin()).clamp(min=1e-12)
            t = t + torch.randn_like(t) * (self.noise * span)
        return t


@dataclass
class EngineResult:
    """Per image: its detections and their heatmaps in model-input space, (n_i, H, W) in [0, 1]."""

    detections: list[list[Detection]]
    heatmaps: list[torch.Tensor]


class CamEngine:
    """Computes per-detection heatmaps for batches of preprocessed images; see the module docstring."""

    def __init__(
        self,
        adapter: ModelAdapter,
        method: Method,
        target: Target,
        layers: Sequence[TargetLayer],
        fuse: str = "sum",
        reshape_transform=None,
        memory_mb: float = 2048.0,
        max_batch: int | None = None,
        seed: int = 0,
        strategy: str = "auto",
    ):
        self.adapter, self.method, self.target = adapter, method, target
        self.layers = list(layers)
        self.fuse = check_fusion(fuse)
        self.reshape = reshape_transform or default_reshape
        self.memory_mb, self.max_batch, self.seed = memory_mb, max_batch, seed
        self.start = min(t.top for t in self.layers)
        self.seed_root = self.layers[0].is_top_level and self.layers[0].top == self.start
        if strategy not in STRATEGIES:
            raise YolocamError(f"unknown strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
        if strategy == "auto":  # measured: batching pays on GPUs; on CPUs re-running forwards per job does not
            strategy = "batched" if adapter.device.type == "cuda" else "loop"
        self.strategy = strategy

    # ------------------------------------------------------------------ public
    def run(self, x: torch.Tensor, conf=0.25, iou=0.7, classes=None, max_det=300, select=None) -> EngineResult:
        """Explain every detection in the batch `x` (B, 3, H, W).

        Detections are those NMS (or the end-to-end top-k) keeps, or `select(head_outputs)` ->
        per image a list of `Detection`s when given (e.g. a validator's kept predictions).
        Works under `torch.inference_mode` too (gradients are computed outside it).
        """
        adapter = self.adapter
        with adapter.explaining(), LayerHooks(self.layers) as hooks, torch.inference_mode(False):
            x = x.clone() if x.is_inference() else x
            with torch.no_grad():
                outputs = adapter.run_layers(x, [None] * len(adapter.layers))
                head = adapter.head_outputs(outputs)
            if select is not None:
                dets = [list(d) for d in select(head)]
            else:
                dets = select_detections(head, adapter.end2end, conf, iou, classes, max_det)
            acts = [self.reshape(hooks.outputs[k]) for k in range(len(self.layers))]
            size = tuple(x.shape[-2:])
            if not self.method.needs_gradients:
                maps = self._image_level_maps(acts, dets, size)
            else:
                maps = self._per_detection_maps(hooks, outputs, acts, dets, size)
        return EngineResult(dets, maps)

    # ---------------------------------------------------------------- internals
    def _image_level_maps(self, acts, dets, size) -> list[torch.Tensor]:
        out = []
        for b, image_dets in enumerate(dets):
            rows = torch.full((len(image_dets),), b, dtype=torch.long, device=acts[0].device)
            strides = self._job_strides(image_dets)
            out.append(self._cam(acts, None, rows, strides, size) if image_dets else self._empty(size))
        return out

    def _per_detection_maps(self, hooks, outputs, acts, dets, size) -> list[torch.Tensor]:
        n_comp = self.target.n_components
        flat = [(d, c) for image_dets in dets for d in image_dets for c in range(n_comp)]
        order = list(range(len(flat)))
        if self.target.local and self.strategy == "batched":  # chunks of one level skip the others' branches
            order.sort(key=lambda i: flat[i][0].level)
        job_maps = []
        chunk = self.chunk_size(outputs)
        for lo in range(0, len(flat), chunk):
            part = [flat[i] for i in order[lo:lo + chunk]]
            jobs = Jobs.build([d for d, _ in part], [c for _, c in part], acts[0].device)
            rows = torch.tensor([d.image for d, _ in part], device=acts[0].device)
            grads = self._gradients(hooks, outputs, rows, jobs)
            job_maps.append(self._cam(acts, grads, rows, self._job_strides(jobs.detections), size))
        all_maps = torch.cat(job_maps) if job_maps else self._empty(size)
        if order != sorted(order):
            all_maps = all_maps[torch.tensor(order, device=all_maps.device).argsort()]
        per_det = all_maps.view(-1, n_comp, *size).amax(1)  # components max-combined
        out, i = [], 0
        for image_dets in dets:
            out.append(per_det[i:i + len(image_dets)])
            i += len(image_dets)
        return out

    def _gradients(self, hooks: LayerHooks, outputs: list, rows: torch.Tensor, jobs: Jobs) -> list[torch.Tensor]:
        """Gradients (S, n, C, H, W) per target layer (after the reshape transform) for n jobs."""
        samples = max(1, self.method.samples)
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(self.seed)
        per_sample = []
        try:
            for _ in range(samples):
                per_sample.append(self._replay(hooks, outputs, rows, jobs, self.method.noise))
        finally:
            torch.random.set_rng_state(generator_state)
        return [torch.stack([s[k] for s in per_sample]) for k in range(len(self.layers))]

    def _replay(self, hooks, outputs, rows, jobs, noise) -> list[torch.Tensor]:
        """Gradients (n, C, H, W) per target layer for n jobs, by the engine's strategy."""
        if self.strategy == "loop":
            return self._replay_loop(hooks, outputs, rows, jobs, noise)
        return self._replay_batched(hooks, outputs, rows, jobs, noise)

    def _replay_batched(self, hooks, outputs, rows, jobs, noise) -> list[torch.Tensor]:
        """One replay with a row per job and one backward for all (the GPU path)."""
        levels = {d.level for d in jobs.detections}
        level = levels.pop() if len(levels) == 1 and self.target.local else None
        with torch.enable_grad():
            replay, live, tensors = self._replay_forward(hooks, outputs, rows, noise)
            values = self.target(self._head(replay, level), jobs)
            grads = torch.autograd.grad(values.sum(), tensors, allow_unused=True)
        return self._structure(live, tensors, grads)

    def _replay_loop(self, hooks, outputs, rows, jobs, noise) -> list[torch.Tensor]:
        """Per image one batch-1 replay, then one retained backward per job (the CPU path: no
        forward is repeated per job, and local targets skip the other levels' head branches)."""
        per_job: list = [None] * len(jobs.detections)
        for image in sorted(set(rows.tolist())):
            ks = [k for k in range(len(per_job)) if int(rows[k]) == image]
            groups: dict = {}
            for k in ks:
                groups.setdefault(jobs.detections[k].level if self.target.local else None, []).append(k)
            with torch.enable_grad():
                replay, live, tensors = self._replay_forward(hooks, outputs, rows[ks[:1]], noise)
                for level, members in groups.items():
                    head = self._head(replay, level)
                    for k in members:
                        one = Jobs.build([jobs.detections[k]], [int(jobs.component[k])], rows.device)
                        grads = torch.autograd.grad(self.target(head, one).sum(), tensors,
                                                    retain_graph=True, allow_unused=True)
                        per_job[k] = self._structure(live, tensors, grads)
        return [torch.cat([g[i] for g in per_job]) for i in range(len(self.layers))]

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
                root = [hooks.prepare(t, noisy=True) for t in flatten_output(_index_rows(outputs[start], rows))]
                replay[start] = rebuild_output(outputs[start], root)
                hooks.outputs[0] = replay[start]
                first = start + 1
            adapter.run_layers(None, replay, start=first)
        finally:
            hooks.replay, hooks.noise = False, 0.0
        live = [hooks.outputs[k] for k in range(len(self.layers))]
        return replay, live, [t for out in live for t in flatten_output(out)]

    def _head(self, replay: list, level: int | None):
        """Head outputs; with a `level`, the other levels' inputs are detached (their branches get
        no backward pass, which only a target local to that level allows)."""
        if level is None:
            return self.adapter.head_outputs(replay)
        feeds = list(replay)
        for lvl, j in enumerate(self.adapter.head_inputs):
            if lvl != level:
                feeds[j] = replay[j].detach()
        return self.adapter.head_outputs(feeds)

    def _structure(self, lives: list, tensors, grads) -> list[torch.Tensor]:
        """Flat gradients -> one reshaped (n, C, H, W) gradient per target layer."""
        grads = [torch.zeros_like(t) if g is None else g for t, g in zip(tensors, grads)]
        out, i = [], 0
        for live in lives:
            n = len(flatten_output(live))
            out.append(self.reshape(rebuild_output(live, grads[i:i + n])).detach())
            i += n
        return out

    def _cam(self, acts, grads, rows, job_strides, size) -> torch.Tensor:
        """Normalised maps (n, H, W) in input space for n jobs (rows index the image of each job)."""
        sel_acts = [a[rows] for a in acts]
        if self.fuse == "aligned":
            grid = max((tuple(a.shape[-2:]) for a in sel_acts), key=lambda s: s[0] * s[1])
            a = align_levels(sel_acts, grid)
            g = None if grads is None else torch.stack([align_levels(list(s), grid) for s in zip(*grads)])
            return resize_maps(normalise(self.method(a, g)), size)
        maps = [self.method(a, None if grads is None else grads[k]) for k, a in enumerate(sel_acts)]
        strides = [size[0] / a.shape[-2] for a in sel_acts]
        return fuse_layer_maps(maps, self.fuse, size, strides, job_strides)

    def _job_strides(self, dets: Sequence[Detection]) -> torch.Tensor:
        return torch.tensor([self.adapter.strides[d.level] for d in dets], device=self.adapter.device)

    def _needed_before(self, start: int) -> list[int]:
        """Indices < start whose outputs the layers from `start` on read."""
        needed = set()
        for i in range(start, len(self.adapter.layers)):
            f = self.adapter.layers[i].f
            for j in ([f] if isinstance(f, int) else f):
                j = i - 1 if j == -1 else j
                if j < start:
                    needed.add(j)
        if self.seed_root:
            needed.discard(start)
        return sorted(needed)

    def chunk_size(self, outputs: list) -> int:
        """Jobs per replay so that the replay's activations and gradients stay under `memory_mb`."""
        if self.max_batch:
            return max(1, int(self.max_batch))
        per_row = 0
        for out in outputs[self.start:]:
            if out is None:
                continue
            for t in flatten_output(out):
                per_row += t[0].numel() * t.element_size()
        per_job = 3 * per_row + 1  # forward activations kept for backward, gradients, workspace
        return max(1, int(self.memory_mb * 2**20 // per_job))

    def _empty(self, size) -> torch.Tensor:
        return torch.zeros((0, *size), device=self.adapter.device)


def _index_rows(out, rows: torch.Tensor):
    """Select batch rows of a layer output (a tensor or a structure of tensors)."""
    return rebuild_output(out, [t.index_select(0, rows) for t in flatten_output(out)])
