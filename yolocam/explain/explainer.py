"""`Explainer`: the public entry point — a model, a method, a target and layers, then `explain(source)`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from ..cam.drise import DriseConfig, DriseEngine, check_masks
from ..cam.engine import CamEngine
from ..cam.fusion import boxes_to_original, check_fusion
from ..cam.methods import get_method
from ..cam.projection import content_region
from ..cam.signed import check_signed
from ..defaults import DEFAULT_FUSE, DEFAULT_LAYERS, DEFAULT_METHOD, default_method
from ..demo.models import model_source
from ..errors import YolocamError
from ..inputs.images import ImageItem, Source, iter_images, resolve_source
from ..model.adapter import ModelAdapter
from ..model.backend import ExportedModel, exported_format
from ..model.checkpoint import load_yolo
from ..model.classify import TOP_K
from ..model.layers import resolve_layers
from ..model.obb import corners, rboxes_to_original
from ..model.pose import keypoints_to_original
from ..model.segment import InstanceMask
from ..model.targets import get_target
from ..output.maps import MapRef, MapStack
from ..output.progress import Progress
from ..output.results import DetectionExplanation, ImageExplanation
from .checks import (apply_preset, check_device, check_imgsz, check_memory, check_thresholds, resolve_classes,
                     round_imgsz)

log = logging.getLogger("yolocam")


class Explainer:
    """Per-detection heatmaps for an ultralytics YOLO detector.

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
        layers: `neck`, `head`, `backbone`, a list of layer indices, or a list of modules.
        fuse: `sum`, `max`, `origin` or `aligned` (how several layers combine).
        imgsz: model input size (pixels, long side), as ultralytics' `imgsz`, at most `yolocam.defaults.MAX_IMGSZ`
            (8192); None = the size the checkpoint was trained at when it records one, else 640.
        device: None keeps the model's device.
        signed: keep what lowered the target as negative values: maps in [-1, 1], scaled by the largest
            magnitude (method hirescam/odam only; fuse sum, aligned or origin; README, "Why not").
        smooth: Gaussian low-pass of each layer's map at its own grid, standard deviation in cells (None = the
            method's own: 1 for `aalayercam`, 0 for the others): removes the stride aliasing that makes fine-layer
            maps change under a 1-2 px shift or a JPEG re-save (README, "Choosing the defaults").
        preset: `stable` (the default), `evidence` or `fast` (`yolocam.defaults.PRESETS`): a method, layers and
            fusion chosen together; arguments given explicitly win (README, "Choosing the defaults").
        exact: fuse `gate` at input resolution as `fuse_layer_maps` defines it (the default fuses at the
            finest layer's grid and projects once: the same maps to correlation >= 0.99, several times cheaper).
        reshape_transform: turns a layer output into (B, C, H, W) (for list/tuple/dict outputs).
        memory_mb: bound on the extra memory of one batched backward (MiB, finite and positive); more
            detections are chunked.
        max_batch: fixed number of jobs per batched backward (a positive integer; overrides `memory_mb`).
        end2end: None uses an end-to-end head's one-to-one branch when there is one.
        strategy: how gradients of many boxes are computed: `batched` (one batched backward),
            `loop` (one retained backward per box), `auto` (batched on CUDA, loop on CPU).
        windows: with `loop`, replay boxes whose receptive field is small on crops around them
            (exactly the same maps, faster); False replays every box on the whole image.
        masks, cell, keep, seed, mask_batch: `method="drise"` only (black-box, `cam/drise.py`): the number of
            random masks, their grid cell in input pixels (None = long side / 16), the probability a cell is
            kept, the mask seed (same seed, same maps), and masked images per forward pass (bounds memory;
            None = 32 on CUDA, 8 on CPU, where larger batches measured slower).
            All boxes of an image are explained from the same `masks` passes. `progress`: None shows the masked
            passes' progress (a bar on a terminal, a line every 10 s elsewhere), False (default) is silent.

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
    """

    def __init__(self, model=None, method: str | None = None, target="class", layers=DEFAULT_LAYERS,
                 fuse: str = DEFAULT_FUSE, imgsz: int | None = None, device=None, reshape_transform=None,
                 memory_mb: float = 2048.0, max_batch: int | None = None, end2end: bool | None = None,
                 strategy: str = "auto", windows: bool = True, masks: int = 1000, cell: int | None = None,
                 keep: float = 0.5, seed: int = 0, mask_batch: int | None = None, progress: bool | None = False,
                 signed: bool = False, smooth: float | None = None, exact: bool = False,
                 preset: str | None = None):
        method, layers, fuse = apply_preset(preset, method, layers, fuse)
        method = default_method(target) if method is None else method  # None: the default for this target
        model = model_source(model)
        check_imgsz(imgsz)
        check_memory(memory_mb, max_batch)
        device = check_device(device)
        self.method = get_method(method)
        fmt = exported_format(model)
        if fmt is not None and not self.method.black_box:
            raise YolocamError(f"method {self.method.name!r} needs gradients, which the exported {fmt} model {model} "
                               f"does not have; use method='drise' (black-box) for exported models")
        self.target = get_target(target)
        self.fuse = check_fusion(fuse)
        self.drise = None
        self.signed = check_signed(signed, self.method, self.target, self.fuse)
        if self.method.black_box:
            if self.target.name != "class":  # D-RISE scores a masked detection as a whole (class and box)
                raise YolocamError(f"method {self.method.name!r} explains each detection as a whole and takes no "
                                   f"target; got target={self.target.name!r} (use target='class', or a gradient "
                                   f"method for that target)")
            DriseConfig(masks, cell, keep, seed, 1 if mask_batch is None else mask_batch).check()
            self.adapter = ExportedModel(model, device) if fmt else ModelAdapter(model, device=device, end2end=end2end)
            if getattr(self.adapter, "task", "detect") == "classify":
                raise YolocamError(f"method {self.method.name!r} scores boxes, which a classification model does not "
                                   f"predict; expected a gradient method ({DEFAULT_METHOD}, gradcam, ...)")
            # measured (README, `yolocam bench --method drise`): on a CPU small batches are fastest
            if mask_batch is None:
                mask_batch = 32 if self.adapter.device.type == "cuda" else 8
            cfg = DriseConfig(masks, cell, keep, seed, mask_batch).check()
            self.layers, self.layers_spec, self.engine = [], None, None
            self.imgsz = round_imgsz(imgsz or self.adapter.train_imgsz or 640, self.adapter.stride)
            check_masks((self.imgsz, self.imgsz), cfg, self.adapter.device)  # before any image: the largest input
            self.drise = DriseEngine(self.adapter, cfg)
            self.progress = progress
            return
        self.adapter = ModelAdapter(model, device=device, end2end=end2end)
        self.layers = resolve_layers(self.adapter, layers)
        self.layers_spec = layers if isinstance(layers, str) else [t.name for t in self.layers]
        self.imgsz = round_imgsz(imgsz or self.adapter.train_imgsz or 640, self.adapter.stride)
        self.engine = CamEngine(self.adapter, self.method, self.target, self.layers, fuse=fuse,
                                reshape_transform=reshape_transform, memory_mb=memory_mb, max_batch=max_batch,
                                strategy=strategy, windows=windows, signed=self.signed,
                                smooth=smooth, exact=exact)

    @property
    def runner(self):
        """What computes the maps: the CAM engine, or the D-RISE engine for `method="drise"` (same `run`)."""
        return self.drise if self.drise is not None else self.engine

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
        if not items:
            return []
        x, lbs = self.adapter.preprocess([it.image for it in items], self.imgsz)
        # maps stay in input space and are kept compact (output/maps.py): full resolution only on access
        if self.drise is not None and self.progress is not False:
            with Progress(self.drise.cfg.masks * len(items), desc="drise", unit="masks", enabled=self.progress) as bar:
                result = self.drise.run(x, conf=conf, iou=iou, classes=classes, max_det=max_det, progress=bar.update)
        else:
            result = self.runner.run(x, conf=conf, iou=iou, classes=classes, max_det=max_det)
        out = []
        masks = getattr(result, "masks", None) or [None] * len(items)
        for item, lb, dets, maps, why, inst in zip(items, lbs, result.detections, result.heatmaps, result.reasons, masks):
            heat = MapStack(content_region(maps, lb).float().cpu().numpy(), lb.orig_shape,
                            lb.region if lb.crop else None, signed=self.signed) if dets else None
            boxes = boxes_to_original(torch.tensor([d.box for d in dets]).view(-1, 4), lb).tolist()
            if self.adapter.task == "classify":  # an image-level explanation: the box is the whole image
                boxes = [[0.0, 0.0, float(lb.orig_shape[1]), float(lb.orig_shape[0])]] * len(dets)
            rboxes, polygons = rotated_to_original(dets, lb)
            keypoints = [None] * len(dets) if not dets or dets[0].keypoints is None else \
                keypoints_to_original(torch.tensor([d.keypoints for d in dets]), lb).tolist()
            if dets and polygons[0] is not None:  # OBB: `box` is the hull of the polygon in image pixels
                boxes = polygon_hulls(polygons, lb.orig_shape)
            explained = [
                DetectionExplanation(box, d.cls, self.names.get(d.cls, str(d.cls)), d.conf, d.anchor, d.level, MapRef(heat, k),
                                     reason=why[k], rbox=rboxes[k], polygon=polygons[k],
                                     keypoints=keypoints[k],
                                     instance_mask=None if inst is None else InstanceMask.from_mask(inst[k].cpu().numpy(),
                                                                                                    lb.orig_shape))
                for k, (d, box) in enumerate(zip(dets, boxes))
            ]
            if counts is not None:
                counts[0] += len(dets)
                refusal = getattr(getattr(self.engine, "target", None), "refusal", lambda d: None)  # contrast
                counts[1] += sum(r is not None and refusal(d) is None for r, d in zip(why, dets))
            out.append(ImageExplanation(item.path, item.image, explained, meta=self.meta,
                                        frame=getattr(item, "frame", None), source=getattr(item, "source", None)))
        return out


def rotated_to_original(dets, lb) -> tuple[list, list]:
    """Per detection its rotated box [cx, cy, w, h, angle] and 4 corners [[x, y]] * 4 in original-image
    pixels (OBB models), else None and None."""
    if not dets or dets[0].rbox is None:
        return [None] * len(dets), [None] * len(dets)
    rboxes = rboxes_to_original(torch.tensor([d.rbox for d in dets]).view(-1, 5), lb)
    return rboxes.tolist(), corners(rboxes).tolist()


def polygon_hulls(polygons: list, shape: tuple[int, int]) -> list[list[float]]:
    """Axis-aligned hulls xyxy of polygons [[x, y] * 4], clipped to an image of (H, W)."""
    pts = torch.tensor(polygons)  # (N, 4, 2)
    lo, hi = pts.amin(1), pts.amax(1)
    size = torch.tensor([shape[1], shape[0]], dtype=pts.dtype)
    return torch.cat((lo.clamp(min=0).minimum(size), hi.clamp(min=0).minimum(size)), 1).tolist()


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
