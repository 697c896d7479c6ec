"""The CAM engine: one forward pass, then every detection's gradients from one batched replay.

1. Capture: run the network once (no autograd), keeping every layer's output; hooks store the
   target layers' outputs (detached).
2. Select detections from the head outputs (NMS or end-to-end top-k).
3. Replay (`replay.py`): re-run only the layers from the earliest target layer to the head,
   seeded from the captured outputs, and differentiate each (detection, component) job's target
   w.r.t. the target layers' outputs, by one of two strategies with the same gradients:
   `batched` (one row per job, one backward; default on CUDA) or `loop` (one retained backward
   per job, boxes replayed on crops around them: exact receptive-field windows, else, unless `exact`,
   truncated ones; default on CPU). Parameters are frozen
   meanwhile, so no parameter `.grad` is touched.
4. Weight activations with gradients (the method) into small per-layer maps, as soon as each
   job's gradients exist; then fuse the layers and resize to the output in one matrix product
   per map (`projection.py`), normalise.

Jobs are processed in chunks so that the replay's extra memory stays under `memory_mb`.

A detection whose target does not depend on the target layers (no gradient reaches them, e.g. a
box on a level that does not use them) keeps an exactly zero map and a reason (`EngineResult.reasons`).
`run` holds the model's lock throughout (`ModelAdapter.explaining`), so one model explained from
several threads gives the sequential results; all per-call state (hooks, noise) is the call's own.

Lifecycle (the interface `DriseEngine` shares, `engines.py`): `CamSettings` holds the engine's settings
and checks their values without a model; `CamEngine.from_settings(adapter, method, target, settings)`
resolves the layers on the model and builds the engine; `run(x, ...)` explains batches, as often as asked.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from ..defaults import DEFAULT_FUSE, DEFAULT_LAYERS
from ..errors import YolocamError
from ..inputs.images import Letterbox
from ..model.adapter import ModelAdapter
from ..model.detections import Detection, select_detections
from ..model.folding import BatchNormFolding
from ..model.hooks import LayerHooks
from ..model.layers import TargetLayer, align_levels, default_reshape, resolve_layers
from ..model.segment import instance_masks
from ..model.contrast import bind_contrast, prepare_detections
from ..model.targets import Jobs, Target, for_task
from .fusion import check_fusion, check_smooth, smooth_maps
from .methods import Method
from .projection import ProjectorCache, assemble_maps
from .replay import ReplayStrategies
from .signed import assemble_signed_maps, check_signed
from .windows import TRUNCATE, WindowPlan, head_reach


STRATEGIES = ("auto", "batched", "loop")


def check_memory(memory_mb, max_batch) -> None:
    """`memory_mb`: a finite positive number (MiB); `max_batch`: None or a positive integer."""
    real = isinstance(memory_mb, numbers.Real) and not isinstance(memory_mb, bool)
    if not real or not math.isfinite(memory_mb) or memory_mb <= 0:
        raise YolocamError(f"memory_mb: expected a finite positive number (MiB), got {memory_mb!r}")
    if max_batch is not None and (not isinstance(max_batch, numbers.Integral) or isinstance(max_batch, bool)
                                  or max_batch < 1):
        raise YolocamError(f"max_batch: expected None or a positive integer, got {max_batch!r}")


@dataclass(frozen=True)
class CamSettings:
    """How the CAM engine computes maps (the gradient methods' `Explainer` keywords).

    layers: `neck`, `head`, `backbone`, `fine`, `+`-joined names, a list of layer indices, or of modules;
    fuse: `sum`, `max`, `origin`, `aligned` or `gate` (how several layers combine);
    reshape_transform: turns a layer output into (B, C, H, W) (for list/tuple/dict outputs);
    memory_mb: bound on the extra memory of one batched backward (MiB; more detections are chunked);
    max_batch: fixed number of jobs per batched backward (overrides `memory_mb`);
    strategy: `batched` (one batched backward), `loop` (one retained backward per box), `auto` (batched
        on CUDA, loop on CPU); windows: with `loop`, replay boxes of small receptive field on crops around
        them (the same maps, faster);
    signed: keep what lowered the target as negative values, maps in [-1, 1] (`signed.py`);
    smooth: Gaussian low-pass of each layer's map at its own grid, in cells (None = the method's own);
    exact: today's exact computation: fuse `gate` at input resolution (the default fuses at the finest layer's
        grid, projects once) and replay boxes whole or on exact windows only (the default's `loop` replays
        boxes whose level has no exact window on truncated ones for pointwise methods, `windows.py`).
    """

    layers: object = DEFAULT_LAYERS
    fuse: str = DEFAULT_FUSE
    reshape_transform: Callable | None = None
    memory_mb: float = 2048.0
    max_batch: int | None = None
    strategy: str = "auto"
    windows: bool = True
    signed: bool = False
    smooth: float | None = None
    exact: bool = False

    def check(self, method: Method, target: Target) -> "CamSettings":
        """These settings, after checking the values that need no model: the fusion's name, the memory bound,
        and that the method, target and fusion keep a sign when `signed` asks for one."""
        check_fusion(self.fuse)
        check_memory(self.memory_mb, self.max_batch)
        check_signed(self.signed, method, target, self.fuse)
        return self


@dataclass
class EngineResult:
    """Per image: its detections and their heatmaps (n_i, H, W) in [0, 1], in model-input space, or in
    original-image space when `run` was given letterboxes."""

    detections: list[list[Detection]]
    heatmaps: list[torch.Tensor]
    reasons: list[list[str | None]] | None = None  # per detection why its map is zero by construction, else None
    masks: list[torch.Tensor] | None = None  # segmentation models: per image (n_i, H, W) uint8 masks at input size


class CamEngine(ReplayStrategies):
    """Computes per-detection heatmaps for batches of preprocessed images; see the module docstring."""

    Settings = CamSettings
    progress = False  # shows no progress bar of its own: one batch is one step

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
        windows: bool = True,
        signed: bool = False,
        smooth: float | None = None,
        exact: bool = False,
    ):
        if method.black_box:
            raise YolocamError(f"method {method.name!r} is black-box: use Explainer(method={method.name!r}), "
                               f"not the CAM engine (which needs a gradient-family method)")
        self.adapter, self.method = adapter, method
        self.target = for_task(target, getattr(adapter, "task", "detect"),  # OBB: box components with the angle
                               getattr(adapter, "keypoint_names", None),  # pose: keypoint targets resolved
                               getattr(getattr(adapter, "head", None), "kpt_shape", (0, 3))[1])
        self.target = bind_contrast(self.target, adapter.names, getattr(adapter, "task", "detect"))
        self.signed = check_signed(signed, method, self.target, fuse)
        self.layers = list(layers)
        self.fuse = check_fusion(fuse)
        self.smooth = method.smooth if smooth is None else check_smooth(smooth)  # None: the method's own
        self.exact = bool(exact)
        self.reshape = reshape_transform or default_reshape
        self.memory_mb, self.max_batch, self.seed = memory_mb, max_batch, seed
        self.start = min(t.top for t in self.layers)
        self.seed_root = self.layers[0].is_top_level and self.layers[0].top == self.start
        if strategy not in STRATEGIES:
            raise YolocamError(f"unknown strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
        if strategy == "auto":  # measured: batching pays on GPUs; on CPUs re-running forwards per job does not
            strategy = "batched" if adapter.device.type == "cuda" else "loop"
        self.strategy = strategy
        self.projectors = ProjectorCache()
        self.folding = BatchNormFolding()  # Conv+BN folded during `run` (`model/folding.py`)
        self.windows = windows
        # truncated windows (`windows.py`), measured for pointwise methods only (gradcam-like weights sum the
        # gradient over the whole image, and lose what lies outside the window)
        self.truncate = TRUNCATE if method.pointwise and not self.exact else None
        self.head_reach = head_reach(adapter)
        self._job_bytes: dict[tuple, int] = {}
        self._plans: dict[tuple[int, int], WindowPlan] = {}
        self.layers_spec = [t.name for t in self.layers]  # how the layers were asked for (`from_settings`)

    @classmethod
    def from_settings(cls, adapter: ModelAdapter, method: Method, target: Target, settings: CamSettings,
                      imgsz: int) -> "CamEngine":
        """The engine of `method` and `target` on `adapter` with `settings` (checked; layers resolved on the
        model). `imgsz`, the largest input, is part of the shared interface (the CAM engine needs none)."""
        settings.check(method, target)
        layers = resolve_layers(adapter, settings.layers)
        engine = cls(adapter, method, target, layers, fuse=settings.fuse, reshape_transform=settings.reshape_transform,
                     memory_mb=settings.memory_mb, max_batch=settings.max_batch, strategy=settings.strategy,
                     windows=settings.windows, signed=settings.signed, smooth=settings.smooth, exact=settings.exact)
        if isinstance(settings.layers, str):
            engine.layers_spec = settings.layers
        return engine

    def steps(self, images: int) -> tuple[int, str]:
        """(progress steps, their unit) of a batch of `images`: the images (`run` reports them when done)."""
        return images, "images"

    # ------------------------------------------------------------------ public
    def run(self, x: torch.Tensor, conf=0.25, iou=0.7, classes=None, max_det=300, select=None,
            letterboxes: Sequence[Letterbox] | None = None,
            progress: Callable[[int], None] | None = None) -> EngineResult:
        """Explain every detection in the batch `x` (B, 3, H, W).

        Detections are those NMS (or the end-to-end top-k) keeps, or `select(head_outputs)` ->
        per image a list of `Detection`s when given (e.g. a validator's kept predictions).
        With `letterboxes` (one per image) the maps are returned in original-image space, else in
        input space. `progress(n)` is called with the number of images once they are explained.
        Works under `torch.inference_mode` too (gradients are computed outside it).
        """
        adapter = self.adapter
        with adapter.explaining(), LayerHooks(self.layers) as hooks, torch.inference_mode(False), \
                self.folding.applied(adapter.module, [t.module for t in self.layers]):
            x = x.clone() if x.is_inference() else x
            with torch.no_grad():
                outputs = adapter.run_layers(x, [None] * len(adapter.layers))
                head = adapter.head_outputs(outputs)
            if select is not None:
                dets = [list(d) for d in select(head)]
            else:
                dets = select_detections(head, adapter.end2end, conf, iou, classes, max_det)
            dets = prepare_detections(self.target, head.logits, dets)  # contrast: the other class, fixed now
            acts = [self.reshape(hooks.outputs[k]) for k in range(len(self.layers))]
            reached = None
            if not self.method.needs_gradients:
                layer_maps = self._image_level_layer_maps(acts, dets)
            else:
                layer_maps, reached = self._per_job_layer_maps(hooks, outputs, acts, dets, tuple(x.shape[-2:]))
            maps = self._fuse(layer_maps, dets, tuple(x.shape[-2:]), letterboxes)
            reasons = self._reasons(dets, maps, reached)
        if progress is not None:
            progress(len(dets))
        return EngineResult(dets, maps, reasons, detection_masks(head, dets, tuple(x.shape[-2:])))

    # ---------------------------------------------------------------- internals
    def _image_level_layer_maps(self, acts, dets) -> list[torch.Tensor]:
        """Raw layer maps [(n, h_l, w_l)] for image-level methods: computed once per image, one row per detection."""
        parts = []
        for b, image_dets in enumerate(dets):
            if image_dets:
                maps = self._layer_maps(acts, None, torch.tensor([b], device=acts[0].device))
                parts.append([m.expand(len(image_dets), *m.shape[1:]) for m in maps])
        return self._concat(parts, acts)

    def _reasons(self, dets, maps, reached) -> list[list[str | None]]:
        """Per detection: why its map is zero when no job of it reached the target layers (its score does
        not depend on them: a box on a level that does not use them), else None. Such maps are set to
        exact zeros."""
        out = [[None] * len(image_dets) for image_dets in dets]
        if reached is None:
            return out
        per_det = reached.view(-1, self.target.n_components).any(1).tolist()
        names = ", ".join(t.name for t in self.layers)
        k = 0
        for b, image_dets in enumerate(dets):
            for i in range(len(image_dets)):
                refusal = getattr(self.target, "refusal", lambda d: None)(image_dets[i])
                if refusal is not None or not per_det[k]:
                    maps[b][i].zero_()
                    out[b][i] = refusal or (f"its score does not depend on the explained layers ({names}): no "
                                            f"gradient reaches them from level {image_dets[i].level}")
                k += 1
        return out

    def _per_job_layer_maps(self, hooks, outputs, acts, dets, size) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Raw layer maps [(n_jobs, h_l, w_l)], jobs in (detection, component) order across the batch, and
        per job whether any gradient reached the target layers (n_jobs,) bool."""
        n_comp = self.target.n_components
        flat = [(d, c) for image_dets in dets for d in image_dets for c in range(n_comp)]
        order = list(range(len(flat)))
        if self.target.local and self.strategy == "batched":  # chunks of one level skip the others' branches
            order.sort(key=lambda i: flat[i][0].level)
        parts, reached = [], []
        chunk = self.chunk_size(hooks, outputs) if flat else 1
        plan = self._window_plan(outputs, acts, size) if flat else None
        for lo in range(0, len(flat), chunk):
            part = [flat[i] for i in order[lo:lo + chunk]]
            jobs = Jobs.build([d for d, _ in part], [c for _, c in part], acts[0].device)
            rows = torch.tensor([d.image for d, _ in part], device=acts[0].device)
            parts.append(self._chunk_layer_maps(hooks, outputs, acts, rows, jobs, plan, reached))
        maps = self._concat(parts, acts)
        reached = torch.cat(reached) if reached else torch.zeros(0, dtype=torch.bool)
        if order != sorted(order):
            inverse = torch.tensor(order).argsort()
            maps = [m[inverse.to(m.device)] for m in maps]
            reached = reached[inverse]
        return maps, reached

    def _window_plan(self, outputs, acts, size) -> WindowPlan | None:
        """Receptive-field windows (`windows.py`) for the loop strategy's local, noise-free jobs, else None."""
        if not (self.windows and self.strategy == "loop" and self.target.local and self.method.samples <= 1
                and self.reshape is default_reshape):
            return None
        if size not in self._plans:
            self._plans[size] = WindowPlan(self.adapter, self.start, self.seed_root, self._needed_before(self.start),
                                           outputs, acts, size, truncate=self.truncate)
        return self._plans[size]

    def _chunk_layer_maps(self, hooks, outputs, acts, rows, jobs, plan=None, reached=None) -> list[torch.Tensor]:
        """Raw layer maps of one chunk of jobs; appends to `reached` per job whether any gradient reached
        the target layers, (n,) bool. The loop strategy turns each job's gradients into maps as soon as
        they exist, so full-size gradients of many jobs are never held at once."""
        reached = [] if reached is None else reached
        if self.strategy == "loop" and self.method.samples <= 1:
            def consume(k, grads, win=None):
                if win is not None:  # a window's gradients: the maps of the window, zeros elsewhere
                    return self._window_maps(acts, grads, int(rows[k]), plan, win), _nonzero(
                        [g for g in grads if g is not None] or [acts[0].new_zeros(1, 1)], 1)
                return self._layer_maps(acts, [g[None] for g in grads], rows[k:k + 1]), _nonzero(grads, 1)

            per_job = self._replay_loop(hooks, outputs, rows, jobs, 0.0, consume, plan, acts,
                                        window_consumer=self.method.pointwise and self.fuse != "aligned")
            reached.append(torch.cat([r for _, r in per_job]))
            return [torch.cat([maps[i] for maps, _ in per_job]) for i in range(len(per_job[0][0]))]
        grads = self._gradients(hooks, outputs, rows, jobs)  # per layer (S, n, C, H, W)
        reached.append(_nonzero([g.transpose(0, 1) for g in grads], 1))
        return self._layer_maps(acts, grads, rows)

    def _layer_maps(self, acts, grads, rows: torch.Tensor) -> list[torch.Tensor]:
        """The method's raw maps [(n, h_l, w_l)] (one map at the finest grid for `aligned`) for n jobs.

        acts: per layer (B, C, h, w); grads: per layer (S, n, C, h, w) or None; rows: (n,) image of each job.
        """
        if len(rows) == 1:  # a view, not a copy
            b = int(rows[0])
            sel = [a[b:b + 1] for a in acts]
        else:
            sel = [a.index_select(0, rows) for a in acts]
        if self.fuse == "aligned":
            grid = max((tuple(a.shape[-2:]) for a in sel), key=lambda s: s[0] * s[1])
            g = None if grads is None else torch.stack([align_levels(list(s), grid) for s in zip(*grads)])
            return [self.method(align_levels(sel, grid), g)]
        return [self.method(a, None if grads is None else grads[k]) for k, a in enumerate(sel)]

    def _window_maps(self, acts, grads, row: int, plan: WindowPlan, win) -> list[torch.Tensor]:
        """A pointwise method's raw maps [(1, h_l, w_l)] of one job from its window's gradients (None: none
        reached the layer): computed on the window, zeros elsewhere (the full-size gradient's maps)."""
        out = []
        for t, (a, g) in enumerate(zip(acts, grads)):
            full = a.new_zeros((1, *a.shape[-2:]))
            if g is not None:
                y0, y1, x0, x1 = plan.act_window(t, win)
                full[:, y0:y1, x0:x1] = self.method(a[row:row + 1, :, y0:y1, x0:x1], g[None])
            out.append(full)
        return out

    def _concat(self, parts: list[list[torch.Tensor]], acts) -> list[torch.Tensor]:
        if parts:
            return [torch.cat([p[k] for p in parts]) for k in range(len(parts[0]))]
        grids = [tuple(a.shape[-2:]) for a in acts]
        if self.fuse == "aligned":
            grids = [max(grids, key=lambda s: s[0] * s[1])]
        return [torch.zeros((0, *g), device=acts[0].device) for g in grids]

    def _fuse(self, layer_maps, dets, size, letterboxes) -> list[torch.Tensor]:
        n_comp = self.target.n_components if self.method.needs_gradients else 1
        if self.smooth:  # each layer's map low-passed at its own grid (`fusion.smooth_maps`)
            layer_maps = [smooth_maps(m, self.smooth) for m in layer_maps]
        if self.signed:  # kept signed: no rectification, scaled by the largest magnitude (`signed.py`)
            return assemble_signed_maps(layer_maps, dets, self.fuse, size, letterboxes, self.adapter.strides,
                                        self.projectors, self.adapter.device)
        return assemble_maps(layer_maps, dets, n_comp, self.fuse, size, letterboxes, self.adapter.strides,
                             self.projectors, self.adapter.device, exact=self.exact)


def detection_masks(head, dets, shape) -> list[torch.Tensor] | None:
    """Segmentation heads: per image the detections' masks (n_i, H, W) uint8 at the input size, else None."""
    if head.protos is None:
        return None
    out = []
    for b, image_dets in enumerate(dets):
        anchors = torch.tensor([d.anchor for d in image_dets], dtype=torch.long, device=head.coeffs.device)
        boxes = torch.tensor([d.box for d in image_dets], device=head.coeffs.device).view(-1, 4)
        out.append(instance_masks(head.coeffs[b, anchors], head.protos[b], boxes, shape))
    return out


def _nonzero(grads: list[torch.Tensor], dim: int) -> torch.Tensor:
    """Per row (the first `dim` axes, flattened): whether any layer's gradient is non-zero there. -> (n,) bool, CPU.

    Smallest layers first, stopping once every row has a non-zero gradient (|g|.amax is several times
    faster than `ne(0).any()` on CPU)."""
    flags = None
    for g in sorted(grads, key=lambda g: g.numel()):
        row = g.flatten(dim).abs().amax(-1).flatten() != 0
        flags = row if flags is None else flags | row
        if bool(flags.all()):
            break
    return flags.cpu()
