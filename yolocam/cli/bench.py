"""`yolocam bench`: how long explaining every box of one image takes, against the alternatives.

For a model, image size, device and box count N it times, per image (median of `repeats`,
after `warmup` untimed runs, the variants interleaved within each repeat so that a busy
machine slows them alike):

  a  plain ultralytics `YOLO.predict` (letterbox, fused Conv+BN forward, NMS), no explanation;
  b  yolocam: `Explainer.explain` of all N boxes (one capture forward, batched replay);
  c  the per-box approach most scripts use: per box a full forward with autograd and one
     `torch.autograd.grad` of that box's target w.r.t. the hooked layers (written here);
  d  ultralytics' own `predict(visualize=True)`: one LayerCAM image per image, built from at
     most 16 backward passes to the head inputs (a different, coarser product);
  e  one forward with autograd, then one retained backward per box (what `d` does internally,
     at N boxes; a reference for the engine's design, not a user-facing tool);
  x  yolocam with `exact=True` (the default's exact computation: no truncated windows, `gate` fused
     at input resolution), the earlier default beside the current one;
  f  yolocam with `preset="fast"` (hirescam on the neck, `sum`: the default before the stride-4 stage).

x and f are timed only when asked for (`variants`), with their ratio to b (x/b) and to a (f/a).

N boxes are forced with conf=0 and max_det=N (`found` says how many NMS kept); c and e use the
explainer's own target, layers, method and fusion, so all three produce the same maps. Peak
memory is CUDA `max_memory_allocated` above the start, or on CPU the peak process RSS above the
start, sampled every 2 ms with psutil after glibc's `malloc_trim` (else pages the allocator
kept from earlier calls hide what a call needs).
"""

from __future__ import annotations

import copy
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..cam.fusion import fuse_layer_maps, normalise, resize_maps, to_original
from ..errors import YolocamError
from ..defaults import DEFAULT_METHOD
from ..explain.explainer import Explainer
from ..model.detections import select_detections
from ..model.layers import align_levels, flatten_output, rebuild_output
from ..model.targets import Jobs
from .terminal import printable

IOU = 0.7
VARIANTS = {
    "a": "ultralytics YOLO.predict (fused, letterbox+NMS), no maps",
    "b": "yolocam Explainer.explain, every box",
    "c": "per box: full forward with autograd + autograd.grad of its target",
    "d": "ultralytics predict(visualize=True), <=16 backward passes, one image map",
    "e": "one forward with autograd, then one retained backward per box",
    "x": "yolocam Explainer(exact=True): the exact replay, every box",
    "f": "yolocam Explainer(preset='fast'): hirescam, neck, sum, every box",
}
RATIOS = (("b_over_a", "b", "a"), ("c_over_b", "c", "b"), ("d_over_b", "d", "b"), ("c_over_e", "c", "e"),
          ("e_over_b", "e", "b"), ("x_over_b", "x", "b"), ("f_over_a", "f", "a"))
SHOWN_RATIOS = {"b_over_a": "b/a", "c_over_b": "c/b", "d_over_b": "d/b", "c_over_e": "c/e", "x_over_b": "x/b",
                "f_over_a": "f/a"}
OPTIONAL = ("x_over_b", "f_over_a")  # columns shown only when their variants ran


# ------------------------------------------------------------------ measuring
class _PeakMemory:
    """Peak memory (MiB) above the start of a `with` block: CUDA allocator, or sampled CPU RSS."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.device, self.peak_mb = device, 0.0
        self._stop = threading.Event()

    def __enter__(self) -> "_PeakMemory":
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            return self
        import psutil

        _release_free_memory()
        proc = psutil.Process()
        self._base = self._max = proc.memory_info().rss

        def sample():
            while not self._stop.wait(0.002):
                self._max = max(self._max, proc.memory_info().rss)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._thread.join()
            peak = self._max
        self.peak_mb = max(0.0, (peak - self._base) / 2**20)


def _release_free_memory() -> None:
    """Hand freed heap pages back to the OS (glibc), so that RSS above the start counts what a call needs."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: RSS deltas then undercount reused memory
        pass


def _timed(fn: Callable[[], object], device: torch.device) -> tuple[float, float]:
    """Run `fn` once: (seconds, peak MiB)."""
    with _PeakMemory(device) as mem:
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - t0
    return seconds, mem.peak_mb


def bench_image(size: int, seed: int = 0, kind: str = "noise") -> np.ndarray:
    """A deterministic (size, size, 3) BGR uint8 test image: noise with a few flat shapes, or (kind
    "scene") a generated scene of the demo detectors' objects (`scenes.py`)."""
    if kind == "scene":
        from ..demo.scenes import make_scene

        return make_scene(seed, size=(size, size)).image
    if kind != "noise":
        raise YolocamError(f"image: expected noise or scene, got {kind!r}")
    rng = np.random.RandomState(seed)
    img = (rng.rand(size, size, 3) * 80).astype(np.uint8)
    for _ in range(12):
        x0, y0 = rng.randint(0, size - size // 8, 2)
        w, h = rng.randint(size // 32 + 2, size // 6 + 3, 2)
        img[y0:y0 + h, x0:x0 + w] = rng.randint(0, 256, 3)
    return img


# ------------------------------------------------------------- the reference
def per_box_maps(exp: Explainer, image: np.ndarray, n: int, shared: bool = False) -> torch.Tensor:
    """Heatmaps (n, H0, W0) the per-box way: hooks, then per box a forward (unless `shared`) and a backward.

    shared=False: one no-grad forward for the boxes, then per box a full forward with autograd
    and `torch.autograd.grad` of its target w.r.t. the hooked layer outputs (approach c).
    shared=True: one forward with autograd, then one retained backward per box (approach e).
    """
    ad, eng = exp.adapter, exp.engine
    x, lbs = ad.preprocess([image], exp.imgsz)
    size = tuple(x.shape[-2:])
    store: dict[int, object] = {}
    handles = [t.module.register_forward_hook(lambda m, i, o, k=k: store.__setitem__(k, o))
               for k, t in enumerate(exp.layers)]
    try:
        with ad.explaining(), torch.inference_mode(False), torch.enable_grad():
            xg = x.clone().requires_grad_(True)  # seeds the graph whatever the parameters' flags
            if shared:
                _, head = ad.forward(xg)
            else:
                with torch.no_grad():
                    _, head = ad.forward(x)
            dets = select_detections(head, ad.end2end, 0.0, IOU, None, n)[0]
            maps = []
            for det in dets:
                if not shared:
                    _, head = ad.forward(xg)
                outs = [store[k] for k in range(len(exp.layers))]
                tensors = [t for out in outs for t in flatten_output(out)]
                per_comp = []
                for comp in range(eng.target.n_components):
                    value = eng.target(head, Jobs.build([det], [comp], x.device)).sum()
                    grads = torch.autograd.grad(value, tensors, retain_graph=True, allow_unused=True)
                    grads = [torch.zeros_like(t) if g is None else g for t, g in zip(tensors, grads)]
                    per_comp.append(_reference_cam(exp, outs, grads, det, size))
                maps.append(torch.stack(per_comp).amax(0))
    finally:
        for h in handles:
            h.remove()
    if not maps:
        return torch.zeros((0, *image.shape[:2]))
    return to_original(torch.cat(maps), lbs[0])


def _reference_cam(exp: Explainer, outs: list, grads: list, det, size) -> torch.Tensor:
    """One box's normalised map (1, H, W) from hooked layer outputs and flat gradients (the engine's formula)."""
    eng, acts, gs, i = exp.engine, [], [], 0
    for out in outs:
        flat = flatten_output(out)
        acts.append(eng.reshape(rebuild_output(out, [t.detach() for t in flat])))
        gs.append(eng.reshape(rebuild_output(out, grads[i:i + len(flat)])))
        i += len(flat)
    samples = max(1, eng.method.samples)  # SmoothGrad: the same work per sample, without the noise
    if eng.fuse == "aligned":
        grid = max((tuple(a.shape[-2:]) for a in acts), key=lambda s: s[0] * s[1])
        g = align_levels(gs, grid)[None].expand(samples, -1, -1, -1, -1)
        return resize_maps(normalise(eng.method(align_levels(acts, grid), g)), size)
    maps = [eng.method(a, g[None].expand(samples, -1, -1, -1, -1)) for a, g in zip(acts, gs)]
    strides = [size[0] / a.shape[-2] for a in acts]
    job_strides = torch.tensor([exp.adapter.strides[det.level]], device=acts[0].device)
    return fuse_layer_maps(maps, eng.fuse, size, strides, job_strides)


# ------------------------------------------------------------- ultralytics
def _ultralytics_model(exp: Explainer, folder: str):
    """`ultralytics.YOLO` on a checkpoint holding a copy of the model (predict fuses it in place)."""
    from ..model.checkpoint import load_yolo

    path = Path(folder) / "bench_model.pt"
    module = copy.deepcopy(exp.adapter.module).float().cpu()
    torch.save({"model": module, "train_args": {}}, path)
    return load_yolo(path)


def _predict_kwargs(exp: Explainer, n: int) -> dict:
    return dict(conf=0.0, iou=IOU, max_det=n, imgsz=exp.imgsz, device=str(exp.adapter.device), verbose=False,
                save=False)


# ------------------------------------------------------------------- public
def run_bench(model=None, imgsz: int = 640, device=None, boxes: Sequence[int] | str = (10, 50, 100),
              repeats: int = 5, warmup: int = 1, method: str | None = None, memory_mb: float = 2048,
              variants: str = "abcde", image: str = "noise", strategy: str = "auto") -> list[dict]:
    """Time variants a-e (module docstring) per box count; one dict per count with seconds, ratios, MiB."""
    counts = parse_boxes(boxes)
    if repeats < 1 or warmup < 0:
        raise YolocamError(f"repeats must be >= 1 and warmup >= 0, got {repeats} and {warmup}")
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise YolocamError(f"variants: unknown {''.join(sorted(unknown))}; expected letters of {''.join(VARIANTS)}")
    exp = Explainer(model, method=method or DEFAULT_METHOD, imgsz=imgsz, device=device, memory_mb=memory_mb,
                    strategy=strategy)
    others = {}  # the same model object: one copy of the weights, the same preprocessing and boxes
    if "x" in variants:
        others["x"] = Explainer(exp.adapter.module, method=exp.method.name, imgsz=exp.imgsz, device=device,
                                memory_mb=memory_mb, strategy=strategy, exact=True)
    if "f" in variants:
        others["f"] = Explainer(exp.adapter.module, preset="fast", imgsz=exp.imgsz, device=device,
                                memory_mb=memory_mb, strategy=strategy)
    dev = exp.adapter.device
    picture = bench_image(imgsz, kind=image)
    rows = []
    with tempfile.TemporaryDirectory(prefix="yolocam-bench-") as tmp:
        yolo = _ultralytics_model(exp, tmp) if set(variants) & {"a", "d"} else None
        for n in counts:
            rows.append(_bench_one(exp, yolo, picture, n, repeats, warmup, variants, tmp, dev, others))
    for row in rows:
        row["image"] = image
    return rows


def _bench_one(exp, yolo, image, n, repeats, warmup, variants, tmp, dev, others=None) -> dict:
    vis = dict(_predict_kwargs(exp, n), visualize=True, project=tmp, name="vis", exist_ok=True)
    fns = {
        "a": lambda: yolo.predict(image, **_predict_kwargs(exp, n)),
        "b": lambda: exp.explain(image, conf=0.0, iou=IOU, max_det=n),
        "c": lambda: per_box_maps(exp, image, n),
        "d": lambda: yolo.predict(image, **vis),
        "e": lambda: per_box_maps(exp, image, n, shared=True),
    }
    for v, other in (others or {}).items():
        fns[v] = lambda other=other: other.explain(image, conf=0.0, iou=IOU, max_det=n)
    found = exp.explain(image, conf=0.0, iou=IOU, max_det=n)[0].detections
    row: dict = {
        "boxes": n, "found": len(found), "imgsz": exp.imgsz, "device": str(dev), "model": exp.adapter.name,
        "method": exp.method.name, "strategy": getattr(exp.engine, "strategy", "-"), "target": exp.target.name, "repeats": repeats, "threads": torch.get_num_threads(),
        "levels": np.bincount([d.level for d in found], minlength=len(exp.adapter.strides)).tolist(),
        "memory": "cuda max_memory_allocated" if dev.type == "cuda" else "cpu peak rss (psutil, sampled every 2 ms, after malloc_trim)",
    }
    threads = torch.get_num_threads()  # ultralytics' predict resets it on CPU; every variant runs with this one

    def call(v: str) -> None:
        fns[v]()
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)

    times: dict[str, list[float]] = {v: [] for v in variants}
    peaks: dict[str, list[float]] = {v: [] for v in variants}
    for v in variants:
        try:
            for _ in range(warmup):
                call(v)
        except Exception as exc:  # e.g. ultralytics cannot run this model offline: say so in the row
            row[f"{v}_error"] = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
            times.pop(v)
    with torch.inference_mode(False):
        for _ in range(repeats):
            for v in list(times):
                seconds, peak = _timed(lambda: call(v), dev)
                times[v].append(seconds)
                peaks[v].append(peak)
    for v in variants:
        row[f"{v}_s"] = statistics.median(times[v]) if times.get(v) else None
        row[f"{v}_mb"] = max(peaks[v]) if times.get(v) else None
    for key, num, den in RATIOS:
        top, bottom = row.get(f"{num}_s"), row.get(f"{den}_s")
        row[key] = top / bottom if top and bottom else None
    return row


def parse_boxes(boxes) -> list[int]:
    """Box counts from "10,50,100" or a sequence of ints; each must be >= 1."""
    try:
        items = [int(b) for b in (boxes.split(",") if isinstance(boxes, str) else boxes)]
    except (TypeError, ValueError):
        raise YolocamError(f"boxes: expected positive integers like 10,50,100, got {boxes!r}") from None
    if not items or any(b < 1 for b in items):
        raise YolocamError(f"boxes: expected positive integers like 10,50,100, got {boxes!r}")
    return items


def format_table(rows: list[dict]) -> str:
    """A plain-text table of `run_bench` rows, with a legend naming each variant and the memory measure."""
    if not rows:
        return "(no results)"
    first = rows[0]
    lines = [f"model {first['model']}  image {first.get('image', 'noise')}  imgsz {first['imgsz']}  device {first['device']}  "
             f"torch threads {first['threads']}  method {first['method']}  strategy {first.get('strategy', '-')}  target {first['target']}  "
             f"median of {first['repeats']}"]
    letters = [v for v in VARIANTS if f"{v}_s" in first]
    ratios = [k for k in SHOWN_RATIOS if k not in OPTIONAL or any(r.get(k) is not None for r in rows)]
    head = (["boxes", "found"] + [f"{v} s" for v in letters] + [SHOWN_RATIOS[k] for k in ratios]
            + [f"{v} MiB" for v in letters])
    body = []
    for r in rows:
        cells = [str(r["boxes"]), str(r["found"])]
        cells += [_num(r.get(f"{v}_s"), 3) for v in letters]
        cells += [_num(r.get(k), 2) for k in ratios]
        cells += [_num(r.get(f"{v}_mb"), 0) for v in letters]
        body.append(cells)
    widths = [max(len(c) for c in col) for col in zip(head, *body)]
    fmt = lambda cells: "  ".join(c.rjust(w) for c, w in zip(cells, widths))  # noqa: E731
    lines += [fmt(head), fmt(["-" * w for w in widths])] + [fmt(c) for c in body]
    lines += [f"  {v}: {VARIANTS[v]}" for v in letters]
    lines.append(f"  memory: {first['memory']}, above the start of each call; detections per level: "
                 + "; ".join(f"{r['boxes']}: {r['levels']}" for r in rows))
    for r in rows:
        lines += [f"  {v} failed at {r['boxes']} boxes: {r[f'{v}_error']}" for v in VARIANTS if f"{v}_error" in r]
    return "\n".join(lines)


def _num(value, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def main_bench(args) -> int:
    """CLI entry: args has model, imgsz, device, boxes, repeats, warmup, method, memory_mb, strategy,
    variants. Prints the table."""
    try:
        rows = run_bench(model=getattr(args, "model", None), imgsz=getattr(args, "imgsz", None) or 640,
                         device=getattr(args, "device", None), boxes=getattr(args, "boxes", (10, 50, 100)),
                         repeats=getattr(args, "repeats", 5), warmup=getattr(args, "warmup", 1),
                         method=getattr(args, "method", None), memory_mb=getattr(args, "memory_mb", 2048.0),
                         image=getattr(args, "image", "noise"), strategy=getattr(args, "strategy", "auto"),
                         variants=getattr(args, "variants", "abcde"))
    except YolocamError as exc:
        print(f"yolocam bench: {printable(exc)}", file=sys.stderr)
        return 2
    print(format_table(rows))
    return 0
