"""Reading an output folder (manifest.json + heatmaps.npz files) back into result objects."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from ..errors import YolocamError
from ..model.segment import PolygonMask
from .maps import MapRef, MapStack
from ..inputs.images import check_pixels
from .paths import inside
from .results import DetectionExplanation, ImageExplanation


def load_output(out_dir) -> list[ImageExplanation]:
    """Read an output folder written by `ExportWriter` back into `ImageExplanation` objects.

    Images are read from their recorded paths when those still exist (else `image` is None).
    Heatmaps are full resolution, float32: files with compact maps (`image_size` in the npz) are
    resized on access, one detection at a time (`maps.MapStack`); older full-size files are read as they are.
    """
    out = Path(out_dir)
    try:
        manifest = json.loads((out / "manifest.json").read_text())
    except FileNotFoundError:
        raise YolocamError(f"no manifest.json in {out}") from None
    except ValueError as exc:
        raise YolocamError(f"corrupt manifest.json in {out}: {exc}") from None
    meta = {k: manifest.get(k) for k in ("model", "method", "target", "layers")}
    results = []
    if not isinstance(manifest, dict) or not isinstance(manifest.get("images", []), list):
        raise YolocamError(f"manifest.json in {out} is not a yolocam manifest (expected an object with 'images')")
    for img in manifest.get("images", []):
        heatmaps_path = inside(out, img.get("heatmaps")) if isinstance(img, dict) else None
        if heatmaps_path is None:
            raise YolocamError(f"manifest.json in {out}: heatmaps path "
                               f"{img.get('heatmaps') if isinstance(img, dict) else img!r} leaves the folder "
                               "(expected <stem>/heatmaps.npz inside it)")
        try:
            with np.load(heatmaps_path, allow_pickle=False) as npz:
                heatmaps = npz["heatmaps"]
                size = tuple(int(v) for v in npz["image_size"]) if "image_size" in npz else heatmaps.shape[1:]
                region = npz["region"].tolist() if "region" in npz else None  # classification: the centre crop
                signed = bool(npz["signed"]) if "signed" in npz else False  # maps in [-1, 1]
            _check_size(size, img, out)
            stack = MapStack(heatmaps, size, region, signed=signed)
        except (OSError, KeyError, ValueError, TypeError) as exc:
            raise YolocamError(f"unreadable heatmaps for {img.get('stem')!r} in {out}: {exc}") from None
        if len(heatmaps) != len(img["detections"]):
            raise YolocamError(f"{img['heatmaps']}: expected {len(img['detections'])} heatmaps (as in the "
                               f"manifest), got {len(heatmaps)}")
        path = img.get("path")
        image = cv2.imread(path) if path and Path(path).is_file() else None
        dets = [
            DetectionExplanation(list(d["box"]), d["cls"], d["name"], d["conf"], d["anchor"], d["level"], MapRef(stack, k),
                                 reason=d.get("reason"), rbox=d.get("rbox"), polygon=d.get("polygon"),
                                 keypoints=d.get("keypoints"), instance_mask=_polygon_mask(d, img))
            for k, d in enumerate(img["detections"])
        ]
        results.append(ImageExplanation(path, image, dets, meta=dict(meta, stem=img["stem"])))
    for err in manifest.get("errors", []):
        results.append(ImageExplanation(err.get("path"), None, [], error=err.get("error"), meta=dict(meta)))
    return results


def _check_size(size: tuple, img: dict, out: Path) -> None:
    """The maps' image size must be the manifest's own, and within the decoded-image pixel limit."""
    if len(size) != 2 or min(size) < 1:
        raise YolocamError(f"{img.get('heatmaps')} in {out}: expected an image size (H, W), got {tuple(size)}")
    h, w = int(size[0]), int(size[1])
    if (img.get("height"), img.get("width")) != (h, w):
        raise YolocamError(f"{img.get('heatmaps')} in {out}: maps for a {w}x{h} image, but the manifest says "
                           f"{img.get('width')}x{img.get('height')}")
    check_pixels(w, h, f"{img.get('heatmaps')} in {out}")  # the limit images are decoded under


def _polygon_mask(det: dict, img: dict) -> PolygonMask | None:
    """Segmentation models: the mask outlines of a manifest entry (else None)."""
    if "segments" not in det:
        return None
    return PolygonMask(det["segments"], (int(img["height"]), int(img["width"])))
