"""D-RISE (Petsiuk et al., CVPR 2021): black-box saliency for every detection of an image at once.

1. N random masks as in RISE: a coarse binary grid (cells of `cell` input pixels, each kept with
   probability `keep`), upsampled bilinearly to one cell more than the input and cut at a random
   shift, so the masks are smooth and not aligned to the grid. Grids and shifts come from a local
   `torch.Generator` seeded by `seed` (torch's global random state is neither used nor changed), drawn
   on the CPU up front: the same seed gives the same masks on any device and for any `batch`.
2. The image is masked (masked-out pixels take the letterbox grey, the model's "nothing") and the
   detector runs on `batch` masked copies at a time, on the model's device; memory is bounded by
   `batch`, the cost by N (not N x boxes): every target box is scored against the same passes.
3. A mask's weight for target k (box b_k, class-probability vector p_k) is the best match among the
   masked image's raw predictions d: max_d IoU(b_k, b_d) x cos(p_k, p_d) x s_d, where s_d, the
   prediction's best class probability, stands in for the objectness of the paper's YOLOv3 (YOLO
   heads since v8 have none). All targets, predictions and masks of a batch in one vectorised step.
4. Saliency S_k = sum_i (w_ik - mean_i w_ik) M_i / N: the weighted sum of the paper, less its
   constant baseline (mean weight x mean mask), then rectified and scaled to a maximum of 1.
   Pixels whose masking lowers the match are positive evidence; a map with none is all zeros.

Lifecycle (the interface `CamEngine` shares, `engines.py`): `DriseSettings` holds the `Explainer`
keywords and checks their values without a model; `DriseEngine.from_settings(model, method, target,
settings, imgsz)` fixes the mask batch for the model's device and refuses masks that cannot fit at the
largest input; `run(x, ...)` explains batches.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from ..defaults import DEFAULT_METHOD
from ..errors import YolocamError
from ..inputs.images import Letterbox
from ..model.adapter import ModelAdapter
from ..model.backend import head_from_raw, raw_predictions
from ..model.detections import select_detections
from .engine import EngineResult
from .fusion import normalise_, to_original

GREY = 114 / 255.0
UP_CHUNK_BYTES = 256 * 2**20  # the upsampled grids `MaskSource.masks` holds at a time (at least one mask's)


@dataclass(frozen=True)
class DriseConfig:
    """masks: N; cell: grid cell in input pixels (None = long side / 16, the paper's 16 x 16 grid);
    keep: probability a cell is kept; seed: mask seed; batch: masked images per forward pass."""

    masks: int = 1000
    cell: int | None = None
    keep: float = 0.5
    seed: int = 0
    batch: int = 32

    def check(self) -> "DriseConfig":
        def bad(name, expected):
            return YolocamError(f"drise {name}: expected {expected}, got {getattr(self, name)!r}")

        for name in ("masks", "batch"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise bad(name, "a positive integer")
        if self.cell is not None and (not isinstance(self.cell, int) or isinstance(self.cell, bool) or self.cell < 2):
            raise bad("cell", "None or an integer >= 2 (pixels)")
        if not isinstance(self.keep, (int, float)) or isinstance(self.keep, bool) or not 0 < self.keep < 1:
            raise bad("keep", "a probability strictly between 0 and 1")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or not -2**63 <= self.seed < 2**64:
            raise bad("seed", "an integer in [-2**63, 2**64)")
        return self


@dataclass(frozen=True)
class DriseSettings:
    """The D-RISE engine's settings (`Explainer(method="drise")`'s keywords): masks, cell, keep and seed as
    in `DriseConfig`; mask_batch: masked images per forward pass (bounds memory; None = 32 on CUDA, 8 on
    CPU, where larger batches measured slower); progress: None shows the masked passes' progress (a bar
    on a terminal, a line every 10 s elsewhere), False is silent."""

    masks: int = 1000
    cell: int | None = None
    keep: float = 0.5
    seed: int = 0
    mask_batch: int | None = None
    progress: bool | None = False

    def check(self, method, target) -> "DriseSettings":
        """These settings, after checking what needs no model: D-RISE explains a detection as a whole (the
        `class` target only), and the mask values (`DriseConfig.check`)."""
        if target.name != "class":  # D-RISE scores a masked detection as a whole (class and box)
            raise YolocamError(f"method {method.name!r} explains each detection as a whole and takes no "
                               f"target; got target={target.name!r} (use target='class', or a gradient "
                               f"method for that target)")
        self.config(None)
        return self

    def config(self, device) -> DriseConfig:
        """The masks as `DriseConfig` (checked), the batch fixed for `device` when `mask_batch` is None (None:
        a placeholder of 1, to check the other values before the model is known)."""
        batch = self.mask_batch
        # measured (examples/README.md "D-RISE", `yolocam bench --method drise`): on a CPU small batches are fastest
        if batch is None:
            batch = 1 if device is None else 32 if torch.device(device).type == "cuda" else 8
        return DriseConfig(self.masks, self.cell, self.keep, self.seed, batch).check()


def mask_cell(size: tuple[int, int], cfg: DriseConfig) -> int:
    """The grid cell in input pixels: `cfg.cell`, or the long side / 16 (the paper's 16 x 16 grid)."""
    return cfg.cell or max(2, math.ceil(max(size) / 16))


def mask_grid(size: tuple[int, int], cell: int) -> tuple[int, int]:
    """Grid cells (rows, columns) of a mask: one more than cover the input, for the random shift."""
    return math.ceil(size[0] / cell) + 1, math.ceil(size[1] / cell) + 1


def mask_bytes(size: tuple[int, int], cfg: DriseConfig, targets: int = 1) -> tuple[int, int]:
    """(bytes of the N grids, drawn up front on the CPU; bytes of one batch on the model's device: its masks,
    masked images, upsampled grids and the `targets` saliency maps), as `drise_saliency` allocates them."""
    h, w = size
    cell = mask_cell(size, cfg)
    gh, gw = mask_grid(size, cell)
    grids = cfg.masks * gh * gw * 5  # float32 draws, then their bool
    batch = min(cfg.batch, cfg.masks)
    one_up = 4 * gh * cell * gw * cell
    up = min(batch, max(1, UP_CHUNK_BYTES // one_up)) * one_up
    return grids, 4 * h * w * (9 * batch + 3 * targets + 1) + up  # masks + masked images: 9 planes per mask


def memory_bytes(device) -> int | None:
    """Total memory of `device` in bytes (the CPU's: physical memory, or the cgroup's limit when lower);
    None when unknown."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    if device.type != "cpu":
        return None
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None
    with contextlib.suppress(OSError, ValueError):
        with open("/sys/fs/cgroup/memory.max") as f:
            total = min(total, int(f.read().strip()))  # "max" (no limit) fails int()
    return total


def check_masks(size: tuple[int, int], cfg: DriseConfig, device, targets: int = 1) -> None:
    """Refuse, before anything is allocated, a cell larger than the input (H, W) and masks that need more
    memory than the CPU (the grids) or `device` (one batch) has."""
    h, w = size
    cell = mask_cell(size, cfg)
    if cell > max(h, w):
        raise YolocamError(f"drise cell: expected at most the model input's long side ({max(h, w)} pixels, input "
                           f"{w}x{h}; default long side / 16 = {mask_cell(size, DriseConfig())}), got {cell}")
    grids, batch = mask_bytes(size, cfg, targets)
    gh, gw = mask_grid(size, cell)
    gb = 2**30
    have = memory_bytes("cpu")
    if have is not None and grids > have:
        raise YolocamError(f"drise: {cfg.masks} masks of {gh}x{gw} cells (cell {cell} at input {w}x{h}) need about "
                           f"{grids / gb:.1f} GiB, more than the CPU's {have / gb:.1f} GiB; use fewer masks or "
                           f"a larger cell")
    have = memory_bytes(device)
    if have is not None and batch > have:
        raise YolocamError(f"drise: one batch of {min(cfg.batch, cfg.masks)} masked images at input {w}x{h} "
                           f"({targets} boxes) needs about {batch / gb:.1f} GiB, more than the "
                           f"{have / gb:.1f} GiB of {torch.device(device)}; use a smaller mask batch or imgsz")


class MaskSource:
    """The N masks of one input size, generated `batch` at a time on `device` (see the module docstring).

    Sizes are checked first (`check_masks`, with `targets` saliency maps); upsampled grids are made a few at
    a time (`UP_CHUNK_BYTES`), which gives the same masks as all at once."""

    def __init__(self, size: tuple[int, int], cfg: DriseConfig, device, targets: int = 1):
        check_masks(size, cfg, device, targets)
        self.size, self.device = size, device
        self.cell = mask_cell(size, cfg)
        self.grid = mask_grid(size, self.cell)
        gen = torch.Generator(device="cpu").manual_seed(int(cfg.seed))
        self.grids = torch.rand((cfg.masks, *self.grid), generator=gen) < cfg.keep
        self.shifts = torch.randint(0, self.cell, (cfg.masks, 2), generator=gen)

    def __len__(self) -> int:
        return self.grids.shape[0]

    def masks(self, start: int, stop: int) -> torch.Tensor:
        """Masks start..stop-1: (n, H, W) float in [0, 1] on the device."""
        stop = min(stop, len(self))
        (h, w), up_size = self.size, (self.grid[0] * self.cell, self.grid[1] * self.cell)
        step = max(1, UP_CHUNK_BYTES // (4 * up_size[0] * up_size[1]))
        out = torch.empty((stop - start, h, w), device=self.device)
        for a in range(start, stop, step):
            b = min(a + step, stop)
            grids = self.grids[a:b].to(self.device, torch.float32).unsqueeze(1)
            up = F.interpolate(grids, size=up_size, mode="bilinear", align_corners=False)[:, 0]
            for i, (m, (dy, dx)) in enumerate(zip(up, self.shifts[a:b].tolist()), a - start):
                out[i] = m[dy:dy + h, dx:dx + w]
        return out


def box_iou_batched(targets: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """IoU of targets (K, 4) with each masked image's boxes (b, A, 4): (b, K, A)."""
    t = targets[None, :, None, :]
    d = boxes[:, None, :, :]
    wh = (torch.minimum(t[..., 2:], d[..., 2:]) - torch.maximum(t[..., :2], d[..., :2])).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    area_t = (t[..., 2] - t[..., 0]) * (t[..., 3] - t[..., 1])
    area_d = ((d[..., 2] - d[..., 0]) * (d[..., 3] - d[..., 1])).clamp(min=0)
    return inter / (area_t + area_d - inter).clamp(min=1e-9)


def mask_weights(targets: torch.Tensor, target_probs: torch.Tensor, boxes: torch.Tensor,
                 probs: torch.Tensor) -> torch.Tensor:
    """D-RISE weights (b, K): max over each masked image's predictions of IoU x cosine x best score."""
    t_unit = F.normalize(target_probs.float(), dim=-1)
    d_unit = F.normalize(probs.float(), dim=-1)
    cos = torch.einsum("kc,bac->bka", t_unit, d_unit)
    score = probs.amax(-1)[:, None, :]  # (b, 1, A)
    return (box_iou_batched(targets.float(), boxes.float()) * cos * score).amax(-1)


def drise_saliency(predict: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]], image: torch.Tensor,
                   targets: torch.Tensor, target_probs: torch.Tensor, cfg: DriseConfig,
                   progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """Saliency maps (K, H, W) in [0, 1] of K targets on one image (3, H, W) from `cfg.masks` masked passes.

    `predict(batch) -> (boxes (b, A, 4) xyxy, class probabilities (b, A, nc))`; `progress(n)` is called
    with the number of masks done after each batch.
    """
    k = targets.shape[0]
    size = tuple(image.shape[-2:])
    if k == 0:
        return image.new_zeros((0, *size))
    source = MaskSource(size, cfg, image.device, targets=k)
    acc = torch.zeros((k, size[0] * size[1]), device=image.device)
    mask_sum = torch.zeros(size[0] * size[1], device=image.device)
    weight_sum = torch.zeros(k, device=image.device)
    for start in range(0, len(source), cfg.batch):
        stop = min(start + cfg.batch, len(source))
        m = source.masks(start, stop)  # (b, H, W)
        masked = image[None] * m[:, None] + GREY * (1 - m[:, None])
        boxes, probs = predict(masked.to(image.dtype))
        w = mask_weights(targets, target_probs, boxes, probs)  # (b, K)
        flat = m.flatten(1)
        acc.addmm_(w.t(), flat)
        mask_sum += flat.sum(0)
        weight_sum += w.sum(0)
        if progress is not None:
            progress(stop - start)
    sal = acc - (weight_sum / len(source))[:, None] * mask_sum[None]
    return normalise_(sal.view(k, *size) / len(source))


class DriseEngine:
    """D-RISE for a `ModelAdapter` or an `ExportedModel`: `run(x)` -> per image its detections and maps."""

    Settings = DriseSettings

    def __init__(self, model, cfg: DriseConfig, progress: bool | None = False):
        self.model, self.cfg = model, cfg.check()
        self.progress = progress  # None: `Explainer` shows the masked passes' progress; False: silent

    @classmethod
    def from_settings(cls, adapter, method, target, settings: DriseSettings, imgsz: int) -> "DriseEngine":
        """The engine of the black-box `method` on `adapter` (a `ModelAdapter` or an `ExportedModel`) with
        `settings` (checked): the mask batch fixed for the model's device, and masks refused up front that
        need more memory than there is at the largest input, `imgsz` x `imgsz`."""
        if not method.black_box:
            raise YolocamError(f"method {method.name!r} needs gradients: the CAM engine explains it, not D-RISE")
        settings.check(method, target)
        if getattr(adapter, "task", "detect") == "classify":
            raise YolocamError(f"method {method.name!r} scores boxes, which a classification model does not "
                               f"predict; expected a gradient method ({DEFAULT_METHOD}, gradcam, ...)")
        cfg = settings.config(adapter.device)
        check_masks((imgsz, imgsz), cfg, adapter.device)  # before any image: the largest input
        return cls(adapter, cfg, settings.progress)

    def steps(self, images: int) -> tuple[int, str]:
        """(progress steps, their unit) of a batch of `images`: the masked passes (`run` reports each batch)."""
        return self.cfg.masks * images, "masks"

    def predict(self, x: torch.Tensor):
        """Raw boxes and class probabilities of a batch (a PyTorch model in eval mode, frozen, meanwhile)."""
        if isinstance(self.model, ModelAdapter):
            with self.model.explaining():
                return raw_predictions(self.model, x)
        return raw_predictions(self.model, x)

    def detect(self, x: torch.Tensor, conf=0.25, iou=0.7, classes=None, max_det=300, select=None):
        """(per image its detections, class probabilities (B, A, nc)) of the unmasked batch."""
        model = self.model
        if isinstance(model, ModelAdapter):
            with model.explaining(), torch.no_grad():
                head = model.forward(x.to(model.dtype))[1]
            probs = head.logits.float().sigmoid()
        else:
            boxes, probs = self.predict(x)
            head = head_from_raw(boxes, probs, size=tuple(x.shape[-2:]))
        if select is not None:
            return [list(d) for d in select(head)], probs
        return select_detections(head, model.end2end, conf, iou, classes, max_det), probs

    def run(self, x: torch.Tensor, conf=0.25, iou=0.7, classes=None, max_det=300, select=None,
            letterboxes: Sequence[Letterbox] | None = None,
            progress: Callable[[int], None] | None = None) -> EngineResult:
        """Detections of the batch `x` (B, 3, H, W) as `Explainer` finds them (or `select(head_outputs)`'s, as
        in `CamEngine.run`), and their maps (n_i, H, W) in input space (with `letterboxes`, one per image:
        in original-image space), each image's from one set of masks. `progress(n)` is called with the
        number of masks done after each batch of masked passes."""
        model = self.model
        ctx = model.explaining() if isinstance(model, ModelAdapter) else contextlib.nullcontext()
        with ctx, torch.inference_mode(False), torch.no_grad():
            dets, probs = self.detect(x, conf, iou, classes, max_det, select)
            maps = []
            for b, image_dets in enumerate(dets):
                anchors = torch.tensor([d.anchor for d in image_dets], dtype=torch.long, device=x.device)
                targets = torch.tensor([d.box for d in image_dets], device=x.device).view(-1, 4)
                sal = drise_saliency(self.predict, x[b].float(), targets, probs[b, anchors], self.cfg, progress)
                maps.append(sal if letterboxes is None else to_original(sal, letterboxes[b]))
        return EngineResult(dets, maps, [[None] * len(d) for d in dets])


def count_forwards(cfg: DriseConfig) -> int:
    """Forward passes D-RISE makes per image (whatever its number of boxes): ceil(masks / batch)."""
    return math.ceil(cfg.masks / cfg.batch)

