"""`Explainer`: the public entry point — a model, a method, a target and layers, then `explain(source)`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator, Sequence

from ..cam.engines import build_engine, engine_settings
from ..cam.methods import get_method
from ..cam.projection import content_region
from ..defaults import DEFAULT_FUSE, DEFAULT_LAYERS, default_method
from ..demo.models import model_source
from ..errors import YolocamError
from ..inputs.images import ImageItem, Source, iter_images, resolve_source
from ..model.adapter import ModelAdapter
from ..model.backend import ExportedModel, exported_format
from ..model.checkpoint import load_yolo
from ..model.classify import TOP_K
from ..model.detections import instance_data_to_original
from ..model.targets import get_target
from ..output.maps import MapRef, MapStack
from ..output.progress import Progress
from ..output.results import DetectionExplanation, ImageExplanation
from .checks import apply_preset, check_device, check_imgsz, check_thresholds, resolve_classes, round_imgsz

log = logging.getLogger("yolocam")


class Explainer:
    """Per-detection heatmaps for an ultralytics YOLO model: it orchestrates, the parts compute.

    `Explainer(...)` resolves the model (an adapter: `ModelAdapter`, or `ExportedModel` for exported
    files), the method and the target, and builds the method's engine from its settings
    (`cam.engines`: `CamEngine` from `CamSettings` for gradient methods, `DriseEngine` from
    `DriseSettings` for the black-box `drise`). `explain(source)` resolves the source (images, folders,
    videos and streams: `explain/video.py`), preprocesses it in batches, runs the engine on each batch,
    and wraps the maps and each detection's instance data, mapped back to the original image by its
    task's module (`model.detections.instance_data_to_original`), as `ImageExplanation`s.

    Args:
        model: checkpoint path, model YAML, `ultralytics.YOLO`, `DetectionModel`, a demo name
            (`yolocam.list_models()`), or None for the default bundled demo detector.
        method: a name from `yolocam.list_methods()`; None = `yolocam.DEFAULT_METHOD` (aalayercam), or
            ssgradcam++ for the `mask` target (`yolocam.defaults.TARGET_METHODS`).
        target: `class`, `conf`, `box`, `all`, `cluster`, `mask` (segmentation models: the instance's mean
            mask logit over its own mask, README "Segmentation"), or a callable `(outputs, detection) -> scalar`.
            On OBB models `box` explains the rotated box's cx, cy, w, h and angle (README, "Oriented boxes").
            Pose models also take `keypoint:K` (an index or name) and `keypoints` (README, "Pose").
            Classification models (a Classify head) take `class`, `conf` or a callable: their detections are
            their top classes, each explained by an image-level map (README, "Classification").
        imgsz: model input size (pixels, long side), as ultralytics' `imgsz`, at most `yolocam.defaults.MAX_IMGSZ`
            (8192); None = the size the checkpoint was trained at when it records one, else 640.
        device: None keeps the model's device.
        end2end: None uses an end-to-end head's one-to-one branch when there is one.
        preset: `stable` (the default), `evidence` or `fast` (`yolocam.defaults.PRESETS`): a method, layers and
            fusion chosen together; arguments given explicitly win (README, "Choosing the defaults").
        layers, fuse, reshape_transform, memory_mb, max_batch, strategy, windows, signed, smooth, exact: the CAM
            engine's settings, `CamSettings` (`cam/engine.py`) documents each. `layers`: `neck`, `head`,
            `backbone`, a list of layer indices, or a list of modules; `fuse`: how several layers combine;
            `signed`: keep what lowered the target as negative values (hirescam/odam only, README "Why not");
            `smooth`: the per-layer low-pass in cells (None = the method's own, README "Choosing the defaults").
        masks, cell, keep, seed, mask_batch, progress: `method="drise"` only, the D-RISE engine's settings,
            `DriseSettings` (`cam/drise.py`): the number of random masks, their grid cell in input pixels
            (None = long side / 16), the probability a cell is kept, the mask seed (same seed, same maps),
            masked images per forward pass (None = 32 on CUDA, 8 on CPU), and whether the masked passes'
            progress is shown (None: shown, False, the default: silent). All boxes of an image are explained
            from the same `masks` passes.

    Each keyword is checked before the model loads (one `YolocamError` line); the CAM settings' fusion,
    memory bound and `signed` are checked for every method, the D-RISE values for `drise` only.

    Exported models (ONNX, TorchScript, OpenVINO: any path ultralytics' AutoBackend loads) have no
    gradients: they take `method="drise"` only; a gradient method raises `YolocamError`.

    A detection whose score does not depend on `layers` (e.g. `layers=[21]` on YOLOv8: boxes on the
    P3/P4 levels never reach layer 21) keeps a zero heatmap and a `reason`; each `explain` call logs one
    warning line (logger `yolocam`) with their count. A target callable whose result does not depend on
    the model's outputs (a constant, a detached tensor) raises `YolocamError`.

    Threads: one model may be explained from several threads (several `Explainer`s on one
    `ultralytics.YOLO`, or one shared `Explainer`, as in a web service). Explanations of one model are
    serialised: each call holds the model's lock (one re-entrant lock per inner `nn.Module`, shared by
    every adapter on it) from its forward pass to its last map, so results equal the sequential ones
    and the model's training and `requires_grad` flags and hooks are left as found. Different models run
    in parallel. The hooks act only on forward passes of the calling thread, and SmoothGrad noise comes
    from the call's own seeded generator (torch's global random state is neither used nor changed).

    Attributes: `adapter`, `method`, `target`, `imgsz`, `runner` (the engine), `engine` / `drise` (the
    same engine when it is the CAM / D-RISE one, else None), `layers`, `layers_spec`, `fuse`, `signed`.
    """

    def __init__(self, model=None, method: str | None = None, target="class", layers=DEFAULT_LAYERS,
                 fuse: str = DEFAULT_FUSE, imgsz: int | None = None, device=None, reshape_transform=None,
                 memory_mb: float = 2048.0, max_batch: int | None = None, end2end: bool | None = None,
                 strategy: str = "auto", windows: bool = True, masks: int = 1000, cell: int | None = None,
                 keep: float = 0.5, seed: int = 0, mask_batch: int | None = None, progress: bool | None = False,
                 signed: bool = False, smooth: float | None = None, exact: bool = False,
                 preset: str | None = None):
        method, layers, fuse = apply_preset(preset, method, layers, fuse)
        model = model_source(model)
        check_imgsz(imgsz)
        device = check_device(device)
        self.method = get_method(default_method(target) if method is None else method)  # None: the target's default
        check_backend(model, self.method)
        self.target = get_target(target)
        settings = engine_settings(self.method, self.target, layers=layers, fuse=fuse,
                                   reshape_transform=reshape_transform, memory_mb=memory_mb, max_batch=max_batch,
                                   strategy=strategy, windows=windows, signed=signed, smooth=smooth, exact=exact,
                                   masks=masks, cell=cell, keep=keep, seed=seed, mask_batch=mask_batch,
                                   progress=progress)
        self.fuse = fuse
        self.adapter = load_adapter(model, device, end2end)
        self.imgsz = round_imgsz(imgsz or self.adapter.train_imgsz or 640, self.adapter.stride)
        self.runner = build_engine(self.adapter, self.method, self.target, settings, self.imgsz)

    @property
    def engine(self):
        """The CAM engine (gradient methods), else None."""
        return None if self.method.black_box else self.runner

    @property
    def drise(self):
        """The D-RISE engine (`method="drise"`), else None."""
        return self.runner if self.method.black_box else None

    @property
    def layers(self) -> list:
        """The explained layers (`TargetLayer`s; none for D-RISE)."""
        return getattr(self.runner, "layers", [])

    @property
    def layers_spec(self):
        """The layers as asked for (a name, else the layers' names; None for D-RISE), as the manifest records."""
        return getattr(self.runner, "layers_spec", None)

    @property
    def signed(self) -> bool:
        return bool(getattr(self.runner, "signed", False))

    @property
    def progress(self) -> bool | None:
        return self.runner.progress

    @property
    def names(self) -> dict[int, str]:
        return self.adapter.names

    @property
    def meta(self) -> dict:
        meta = {"model": self.adapter.name, "method": self.method.name, "target": self.target.name,
                "layers": self.layers_spec, "strides": [int(v) for v in getattr(self.adapter, "strides", ())]}  # per head level
        return {**meta, "signed": True} if self.signed else meta

    def explain_missed(self, image, gt_boxes, gt_classes) -> list:
        """Why not: for each ground truth (xyxy boxes in the image's pixels, class indices), the raw prediction
        whose box overlaps it best, explained with the ground-truth class's logit; one `MissedExplanation`
        per ground truth, in order (anchor, level, logit, conf, iou, heatmap, pointing, energy)."""
        from .missed import explain_missed

        return explain_missed(self, image, gt_boxes, gt_classes)

    def explain(self, source: Source, conf: float | None = None, iou: float = 0.7, classes=None,
                max_det: int | None = None, batch: int = 1, recursive: bool = False, vid_stride: int = 1,
                stream: bool = False, track: bool = False, tracker: str = "bytetrack.yaml",
                stream_buffer: bool = False) -> list[ImageExplanation] | Iterator[ImageExplanation]:
        """Explain every detection in every image of `source`; one `ImageExplanation` per image, in order.

        `source` may also be anything `YOLO.predict` reads (README, "Videos and streams"): a video file, an
        image or video URL, an rtsp/rtmp/http stream, a webcam index (`0`), `screen`, a .txt list or a .streams
        file; each frame is one `ImageExplanation` with `frame` and `source` set, `vid_stride` takes every n-th
        frame, `stream_buffer` keeps every frame of a live stream (as ultralytics' `stream_buffer`). With
        `stream=True` a generator is returned, explaining frames as it is consumed (memory stays flat over a
        long video; without it all frames are kept). `track=True` runs ultralytics' `tracker` (bytetrack.yaml,
        botsort.yaml) over the frames and sets each box's `track_id`.

        `conf` and `max_det`: None = 0.25 and 300; classification models (README, "Classification"), whose
        detections are their top classes, each an image-level explanation: 0 and 5 (`Probs.top5`), `conf`
        being the least softmax probability explained.

        `classes`: None (all), or class indices and/or names (`0`, `[0, 2]`, `"person"`). `recursive`:
        a folder's sub-folders are searched too. A single unusable image raises `YolocamError`; in a
        multi-image source a bad image is returned with `.error` set and the others are still explained.
        """
        conf, max_det = self.thresholds(conf, max_det)
        check_thresholds(conf, iou, max_det, batch)
        from ..inputs.streams import has_media

        if stream or track or has_media(source):
            from .video import explain_stream

            frames = explain_stream(self, source, conf, iou, classes, max_det, batch, recursive, vid_stride, track,
                                    tracker, stream_buffer)
            if stream:
                return frames
            results = list(frames)
            if len(results) == 1 and results[0].error is not None:
                raise YolocamError(results[0].error)
            return results
        entries = resolve_source(source, recursive=recursive)
        if not entries:
            raise YolocamError(f"no images found in source {source!r}")
        results = list(self.iter_explain(entries, conf=conf, iou=iou, classes=classes, max_det=max_det, batch=batch))
        if len(results) == 1 and results[0].error is not None:
            raise YolocamError(results[0].error)
        return results

    def export(self, source: Source, out_dir, conf: float | None = None, iou: float = 0.7, classes=None,
               max_det: int | None = None, batch: int = 1, recursive: bool = False, vid_stride: int = 1,
               track: bool = False, tracker: str = "bytetrack.yaml", stream_buffer: bool = False, html: bool = False,
               crops: bool = False, save_format: str = "png", progress: bool | None = False) -> dict:
        """Explain `source` (any source `explain` takes) straight into the folder `out_dir`, one image or frame
        at a time: the files of `ImageExplanation.save` per image; for a video or stream its frames'
        folders, the annotated video `<stem>.mp4` and, with `track`, tracks.csv (README, "Videos and streams").
        Returns the counts (images, frames, detections, errors)."""
        from ..output.lock import owning
        from .video import export_source

        with owning(out_dir):
            return export_source(self, source, out_dir, conf, iou, classes, max_det, batch, recursive, vid_stride,
                                 track, tracker, stream_buffer, html=html, crops=crops, save_format=save_format,
                                 progress=progress)

    def iter_explain(self, entries: Sequence, conf: float | None = None, iou: float = 0.7, classes=None,
                     max_det: int | None = None, batch: int = 1) -> Iterator[ImageExplanation]:
        """Like `explain` over already-resolved entries (paths/arrays), yielding results as they finish."""
        conf, max_det = self.thresholds(conf, max_det)
        check_thresholds(conf, iou, max_det, batch)
        classes = resolve_classes(classes, self.names)
        counts = [0, 0]  # detections, of which not depending on the layers
        pending: list[ImageItem] = []
        for item in iter_images(entries):
            if item.error is not None:
                yield from self._explain_items(pending, conf, iou, classes, max_det, counts)
                pending = []
                yield ImageExplanation(item.path, None, [], error=item.error, meta=self.meta,
                                       frame=getattr(item, "frame", None), source=getattr(item, "source", None))
                continue
            pending.append(item)
            if len(pending) >= batch:
                yield from self._explain_items(pending, conf, iou, classes, max_det, counts)
                pending = []
        yield from self._explain_items(pending, conf, iou, classes, max_det, counts)
        if counts[1]:
            log.warning("%d of %d detections do not depend on the explained layers (%s); their "
                        "heatmaps are zero and their `reason` says why", counts[1], counts[0],
                        ", ".join(t.name for t in self.layers))

    def thresholds(self, conf: float | None, max_det: int | None) -> tuple[float, int]:
        """`conf` and `max_det` with None as the model's default: 0.25 and 300, classification 0 and 5."""
        cls = getattr(self.adapter, "task", "detect") == "classify"
        return (0.0 if cls else 0.25) if conf is None else conf, (TOP_K if cls else 300) if max_det is None else max_det

    def _explain_items(self, items: list[ImageItem], conf, iou, classes, max_det, counts=None) -> list[ImageExplanation]:
        """One batch: preprocess, run the engine, wrap each image's maps and detections."""
        if not items:
            return []
        x, lbs = self.adapter.preprocess([it.image for it in items], self.imgsz)
        result = self._run(x, conf=conf, iou=iou, classes=classes, max_det=max_det)
        masks = result.masks or [None] * len(items)
        out = []
        for item, lb, dets, maps, why, inst in zip(items, lbs, result.detections, result.heatmaps, result.reasons, masks):
            out.append(self._wrap(item, lb, dets, maps, why, inst))
            if counts is not None:
                counts[0] += len(dets)
                counts[1] += self._layer_independent(dets, why)
        return out

    def _run(self, x, **kw):
        """The engine on one preprocessed batch, its progress shown unless the engine's `progress` is False."""
        if self.runner.progress is False:
            return self.runner.run(x, **kw)
        total, unit = self.runner.steps(len(x))
        with Progress(total, desc=self.method.name, unit=unit, enabled=self.runner.progress) as bar:
            return self.runner.run(x, progress=bar.update, **kw)

    def _wrap(self, item: ImageItem, lb, dets, maps, why, masks) -> ImageExplanation:
        """One image's `ImageExplanation`: its maps kept compact in input space (`output/maps.py`: full
        resolution only on access), each detection's instance data in original-image pixels."""
        heat = MapStack(content_region(maps, lb).float().cpu().numpy(), lb.orig_shape,
                        lb.region if lb.crop else None, signed=self.signed) if dets else None
        instances = instance_data_to_original(self.adapter.task, dets, lb, masks)
        explained = [DetectionExplanation(inst.box, d.cls, self.names.get(d.cls, str(d.cls)), d.conf, d.anchor, d.level,
                                          MapRef(heat, k), reason=why[k], rbox=inst.rbox, polygon=inst.polygon,
                                          keypoints=inst.keypoints, instance_mask=inst.instance_mask)
                     for k, (d, inst) in enumerate(zip(dets, instances))]
        return ImageExplanation(item.path, item.image, explained, meta=self.meta, frame=getattr(item, "frame", None),
                                source=getattr(item, "source", None))

    def _layer_independent(self, dets, why) -> int:
        """How many of one image's zero maps are zero because the score does not depend on the layers (a
        contrastive target's refusal is not counted)."""
        refusal = getattr(getattr(self.runner, "target", None), "refusal", lambda d: None)
        return sum(r is not None and refusal(d) is None for r, d in zip(why, dets))


def check_backend(model, method) -> None:
    """Exported models have no gradients: a gradient method on one is refused in one line."""
    fmt = exported_format(model)
    if fmt is not None and not method.black_box:
        raise YolocamError(f"method {method.name!r} needs gradients, which the exported {fmt} model {model} "
                           f"does not have; use method='drise' (black-box) for exported models")


def load_adapter(model, device, end2end):
    """The adapter of `model`: an `ExportedModel` for an exported file, else a `ModelAdapter`."""
    if exported_format(model) is not None:
        return ExportedModel(model, device)
    return ModelAdapter(model, device=device, end2end=end2end)


def resolve_model(model):
    """(ultralytics.YOLO wrapper or None, the model for the Explainer, default imgsz)."""
    model = model_source(model)
    if isinstance(model, (str, Path)):
        if Path(model).suffix in (".yaml", ".yml"):  # a model config (random weights): the adapter builds it
            return None, str(model), 640
        model = load_yolo(model)  # exactly the named file (`model/checkpoint.py`)
    wrapper = model if type(model).__name__ == "YOLO" else None
    module = wrapper.model if wrapper is not None else model
    train_args = getattr(module, "args", None)
    imgsz = train_args.get("imgsz") if isinstance(train_args, dict) else None
    return wrapper, model, int(imgsz) if isinstance(imgsz, int) else 640
