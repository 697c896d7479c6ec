"""Writing explanation folders (`reader.py` reads them back), as fixed in the design.

    OUT/manifest.json
    OUT/<stem>/heatmaps.npz         heatmaps (N,h,w) float16 with image_size (2,) int32 = (H, W) when the maps
                                    are kept compact (`maps.py`), else (N,H,W); classification models:
                                    region (4,) int32 x0, y0, x1, y1 the maps cover; boxes (N,4) float32,
                                    classes (N,) int32, scores (N,) float32; OBB models: rboxes (N,5)
                                    float32 cx, cy, w, h, angle
                                    pose models: keypoints (N,K,3) float32 x, y, visibility score
                                    signed maps (`Explainer(signed=True)`): signed = 1 and maps in [-1, 1]
    OUT/<stem>/<k:03d>_<name>.png   overlay per detection (long side at most `overlay_max_side`;
                                    `.jpg` with save_format="jpg", the CLI's default)
    OUT/<stem>/crops/<k:03d>_<name>.png   (optional) the box's zoomed crop (box plus context)
    OUT/index.html                  (optional) gallery

Every file is written under a temporary name and renamed, and the manifest is rewritten after
each image, so an interrupted run leaves only whole files and a manifest of what finished. The
manifest also says whether the run finished (`complete`), which image's files were being written
(`pending`) and which other files the run wrote (`files`), so that `clear_previous` can remove
exactly what a previous run into the same folder wrote (`cleanup.py`).
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from ..errors import YolocamError
from .files import atomic_write_bytes, encode_png, prepare_out_dir, safe_name
from .paths import checked_dir
from .labels import class_colour, conf_text
from .render import (CROP_SIDE, box_crop, detection_levels, draw_box, draw_heat, draw_heat_legend, draw_keypoints,
                     draw_segments, scale_polygon, segments_of)
from .signed_render import signed_box_crop, signed_overlay

MANIFEST_VERSION = 1
SAVE_FORMATS = ("png", "jpg")  # overlays and crops: lossless PNG, or JPEG (quality JPEG_QUALITY, about 8x smaller)
JPEG_QUALITY = 90
OVERLAY_MAX_SIDE = 800  # overlays of larger images are drawn on the image scaled down to this long side
OVERLAY_BYTES_IN_FLIGHT = 256e6  # overlay threads are limited so that their buffers stay under this
# Files an output folder's runs write beside the image folders (the gallery, the demo's pictures, the
# validation report's worst-case cases): an image's stem never takes one of these names.
OWN_FILES = ("manifest.json", "index.html", "summary.png", "scene.png", "cases.json")


class ExportWriter:
    """Adds images to an output folder one by one.

    With `append` (the default) an existing manifest there is continued (its stems stay reserved);
    otherwise a fresh manifest replaces it once the first image is written. Overlays of images whose
    long side exceeds `overlay_max_side` are drawn on the image scaled down to it (None: full size);
    `crops` are cut from the full-resolution overlay. Maps kept compact by `Explainer` are written
    compact (see the module docstring); one full-resolution map at a time is made, only when needed.
    `save_format`: "png" (the default here) or "jpg" for overlays and crops.
    """

    def __init__(self, out_dir, meta: dict | None = None, html: bool = False, crops: bool = False,
                 append: bool = True, overlay_max_side: int | None = OVERLAY_MAX_SIDE, save_format: str = "png"):
        if save_format not in SAVE_FORMATS:
            raise YolocamError(f"save_format: expected one of {', '.join(SAVE_FORMATS)}, got {save_format!r}")
        self.save_format = save_format
        self.out = prepare_out_dir(out_dir)
        self.html, self.crops = html, crops
        self.overlay_max_side = overlay_max_side
        self.manifest = {"version": MANIFEST_VERSION, "model": "", "method": "", "target": "", "layers": None,
                         "images": [], "errors": []}
        existing = self.out / "manifest.json"
        if append and existing.exists():
            try:
                old = json.loads(existing.read_text())
            except (OSError, ValueError):
                old = None  # an unreadable manifest is replaced
            if isinstance(old, dict) and isinstance(old.get("images"), list) and isinstance(old.get("errors"), list):
                self.manifest.update(old)
        self.manifest["complete"] = False  # until `finish`
        self.manifest.pop("pending", None)
        for key in ("model", "method", "target", "layers", "strides"):
            if meta and key in meta:
                self.manifest[key] = meta[key]
        self.stems = {img["stem"].casefold() for img in self.manifest["images"]}
        self._image_json: list[str] = []  # each image entry serialised once, for the rewrites between images
        self._threads: ThreadPoolExecutor | None = None

    def __enter__(self) -> "ExportWriter":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.finish()
        else:
            self.fail()

    def unique_stem(self, path: str | None) -> str:
        """A folder name for `path`'s files, unique in this output (case-insensitively, for any file system),
        never one of the folder's own files (`OWN_FILES`, `files`), nor a name taken on disk by a file or a
        symbolic link (a link could lead the writes out of the folder)."""
        base = safe_name(Path(path).stem) if path else "image"
        own = {n.casefold() for n in OWN_FILES} | {str(f).split("/")[0].casefold()
                                                   for f in self.manifest.get("files", [])}
        stem, k = base, 2
        while stem.casefold() in self.stems or stem.casefold() in own or self._taken_on_disk(stem):
            stem, k = f"{base}_{k}", k + 1
        self.stems.add(stem.casefold())
        return stem

    def stem_for(self, result) -> str:
        """The folder (relative path) of `result`'s files: a new unique stem (video frames: `output/video.py`)."""
        return self.unique_stem(result.path)

    def _taken_on_disk(self, stem: str) -> bool:
        path = self.out / stem
        return os.path.lexists(path) and (path.is_symlink() or not path.is_dir())

    def add_file(self, rel: str) -> None:
        """Record another file this run writes into the folder (relative path), so a rerun can remove it."""
        files = self.manifest.setdefault("files", [])
        if rel not in files:
            files.append(rel)

    def add_error(self, path: str | None, error: str) -> None:
        self.manifest["errors"].append({"path": path, "error": error})
        self.write_manifest()

    def add(self, result) -> dict | None:
        """Write one image's files (`result`: an `ImageExplanation`) and update the manifest; returns its
        manifest entry."""
        if result.error is not None or result.image is None:
            self.add_error(result.path, result.error or "no image")
            return None
        stem = self.stem_for(result)
        names = self.file_names(result, stem)
        self.manifest["pending"] = names
        self.write_manifest()  # lists the files about to be written, in case the run is killed meanwhile
        try:
            image_entry = self.write_files(result, stem)
        except YolocamError as exc:  # this image's files cannot be written here: recorded, the run goes on
            from .cleanup import remove_listed

            remove_listed(self.out, self.manifest.pop("pending", []))
            self.add_error(result.path, str(exc))
            return None
        self.manifest["images"].append(image_entry)
        self.manifest.pop("pending", None)
        self.write_manifest()
        return image_entry

    def set_entries(self, images: list[dict], errors: list[dict]) -> None:
        """Replace the manifest's image and error entries (a distributed run's driver merges them in source order)."""
        self.manifest["images"], self.manifest["errors"] = list(images), list(errors)
        self._image_json = []  # serialised afresh by the next write

    def file_names(self, result, stem: str) -> list[str]:
        """The files (relative to the folder) `write_files(result, stem)` writes: maps, overlays, crops."""
        names = [f"{k:03d}_{safe_name(d.name)}.{self.save_format}" for k, d in enumerate(result.detections)]
        return [f"{stem}/heatmaps.npz"] + [f"{stem}/{n}" for n in names] + (
            [f"{stem}/crops/{n}" for n in names] if self.crops else [])

    def write_files(self, result, stem: str) -> dict:
        """Write one image's files under `stem` (each atomically) and return its manifest entry; the manifest
        itself is left alone (`add` records it; a distributed run's driver merges the entries)."""
        for key in ("model", "method", "target", "layers", "strides"):
            if key in result.meta and not self.manifest.get(key):
                self.manifest[key] = result.meta[key]
        h, w = result.image.shape[:2]
        dets = result.detections
        names = [f"{k:03d}_{safe_name(d.name)}.{self.save_format}" for k, d in enumerate(dets)]
        folder = checked_dir(self.out, stem)  # a real folder inside the output folder, never through a link
        atomic_write_bytes(folder / "heatmaps.npz", encode_maps_npz(
            **heatmap_arrays(dets, h, w),
            boxes=np.asarray([d.box for d in dets], np.float32).reshape(-1, 4),
            classes=np.asarray([d.cls for d in dets], np.int32),
            scores=np.asarray([d.conf for d in dets], np.float32),
            **rbox_arrays(dets),
            **keypoint_arrays(dets),
        ))
        oh, ow = overlay_size(h, w, self.overlay_max_side)
        base = result.image if (oh, ow) == (h, w) else cv2.resize(result.image, (ow, oh), interpolation=cv2.INTER_AREA)
        gx, gy = ow / w, oh / h

        def overlay_entry(k: int) -> dict:
            d, name = dets[k], names[k]
            levels = None if d.signed else detection_levels(d)  # the whole map's energy scale (overlay and crop)
            overlay = signed_overlay(base, d.heatmap_at((oh, ow))) if d.signed else \
                draw_heat(base, d.heatmap_at((oh, ow)), levels)
            colour = class_colour(d.cls)  # as in the summary and the crops
            if getattr(d, "instance_mask", None) is not None:  # segmentation: the mask outline
                draw_segments(overlay, d.segments, colour, gx=gx, gy=gy)
            box = [d.box[0] * gx, d.box[1] * gy, d.box[2] * gx, d.box[3] * gy]
            draw_box(overlay, box, f"{d.name} {conf_text(d.conf)}", colour,
                     polygon=scale_polygon(getattr(d, "polygon", None), gx, gy))
            draw_keypoints(overlay, getattr(d, "keypoints", None), gx, gy)
            if not d.signed:  # what the colours mean
                draw_heat_legend(overlay, box)
            atomic_write_bytes(folder / name, self._encode(overlay))
            del overlay
            entry = {"index": k, **d.to_dict(), "overlay": f"{stem}/{name}"}
            if self.crops:
                entry["crop"] = self._write_crop(folder, name, result.image, d, stem, levels)
            return entry

        # OpenCV drops the GIL while blending and encoding, so overlays are made on a few threads, as
        # many as keep their buffers (about 16 bytes per pixel, a full-size map for crops) bounded
        per_task = 16 * oh * ow + (24 * h * w if self.crops else 0)
        workers = int(max(1, min(4, OVERLAY_BYTES_IN_FLIGHT // per_task)))
        entries = list(self._pool().map(overlay_entry, range(len(dets)))) if len(dets) > 1 and workers > 1 else \
            [overlay_entry(k) for k in range(len(dets))]
        return {"path": result.path, "stem": stem, "width": int(w), "height": int(h),
                "heatmaps": f"{stem}/heatmaps.npz", "detections": entries}

    def _pool(self) -> ThreadPoolExecutor:
        if self._threads is None:
            self._threads = ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1),
                                               thread_name_prefix="yolocam-overlay")
        return self._threads

    def _encode(self, image: np.ndarray) -> bytes:
        if self.save_format == "png":
            return encode_png(image)
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise YolocamError(f"cannot encode JPEG of shape {image.shape}")
        return buf.tobytes()

    def _write_crop(self, folder: Path, name: str, image: np.ndarray, det, stem: str, levels=None) -> str:
        """A zoomed view of the box plus context at full resolution (`render.box_crop`: only that region
        is blended), long side CROP_SIDE px; the gallery shows it as the detection's card."""
        checked_dir(self.out, f"{stem}/crops")
        if det.signed:  # diverging colours and a legend
            crop = signed_box_crop(image, det.heatmap, det.box, f"{det.name} {conf_text(det.conf)}", size=CROP_SIDE,
                                   colour=class_colour(det.cls))
        else:
            crop = box_crop(image, det.heatmap, det.box, f"{det.name} {conf_text(det.conf)}", size=CROP_SIDE,
                            colour=class_colour(det.cls), polygon=getattr(det, "polygon", None),
                            keypoints=getattr(det, "keypoints", None), levels=levels, segments=segments_of(det))
        atomic_write_bytes(folder / "crops" / name, self._encode(crop))
        return f"{stem}/crops/{name}"

    def write_manifest(self, final: bool = False) -> None:
        """Rewrite manifest.json (atomically) so that it lists every image written so far.

        Between images, each image's entry is serialised once and reused, and the file is not
        fsynced: a run of n images then costs O(n) serialisation, not O(n^2). The final write
        serialises everything afresh (entries may have been annotated since) and syncs it.
        """
        if final:
            data = json.dumps(self.manifest, indent=1).encode()
        else:
            images = self.manifest["images"]
            self._image_json += [json.dumps(img) for img in images[len(self._image_json):]]
            head = json.dumps({k: v for k, v in self.manifest.items() if k != "images"})
            data = (head[:-1] + ', "images": [\n' + ",\n".join(self._image_json) + "\n]}").encode()
        atomic_write_bytes(self.out / "manifest.json", data, sync=final)

    def _stop_threads(self) -> None:
        if self._threads is not None:
            self._threads.shutdown()
            self._threads = None

    def finish(self) -> None:
        """Write the final manifest (`complete`: true) and, when asked for, the gallery."""
        self._stop_threads()
        if self.html:
            self.add_file("index.html")
        self.manifest["complete"] = "pending" not in self.manifest  # an image's files failed to be written
        self.write_manifest(final=True)
        if self.html:
            from .gallery import write_gallery

            write_gallery(self.out, self.manifest)

    def fail(self) -> None:
        """After a failed run: remove the files of an image left half-written; if no image or error was
        recorded, remove the manifest and the other files it lists too, else mark the manifest incomplete."""
        from .cleanup import remove_listed

        self._stop_threads()
        remove_listed(self.out, self.manifest.pop("pending", []))
        self.manifest["complete"] = False
        if self.manifest["images"] or self.manifest["errors"]:
            self.write_manifest(final=True)
        else:
            remove_listed(self.out, ["manifest.json", *self.manifest.get("files", [])])


def rbox_arrays(dets) -> dict[str, np.ndarray]:
    """OBB models: the npz's `rboxes` (N, 5) float32 cx, cy, w, h, angle (pixels, radians); else nothing."""
    if not dets or getattr(dets[0], "rbox", None) is None:
        return {}
    return {"rboxes": np.asarray([d.rbox for d in dets], np.float32).reshape(-1, 5)}


def keypoint_arrays(dets) -> dict[str, np.ndarray]:
    """Pose models: the npz's `keypoints` (N, K, 3) float32 x, y (pixels), visibility score; else nothing."""
    if not dets or getattr(dets[0], "keypoints", None) is None:
        return {}
    return {"keypoints": np.asarray([d.keypoints for d in dets], np.float32)}


def overlay_size(h: int, w: int, max_side: int | None) -> tuple[int, int]:
    """(h, w) of an overlay: the image's, or scaled down so that the long side is `max_side`."""
    if not max_side or max(h, w) <= max_side:
        return h, w
    gain = max_side / max(h, w)
    return max(1, round(h * gain)), max(1, round(w * gain))


def heatmap_arrays(dets, h: int, w: int) -> dict[str, np.ndarray]:
    """The npz's map arrays: compact maps with the image size when all detections share one compact
    `MapStack` (maps from one `Explainer` or `load_output` call), else full-size maps made one at a time."""
    signed = {"signed": np.asarray(1, np.int8)} if any(getattr(d, "signed", False) for d in dets) else {}
    refs = [d.map_ref for d in dets]
    stack = refs[0].stack if refs and refs[0] is not None else None
    if (stack is not None and stack.compact and stack.size == (h, w)
            and all(r is not None and r.stack is stack for r in refs)):
        index = [r.index for r in refs]
        maps = stack.maps if index == list(range(len(stack))) else stack.maps[index]
        region = {} if stack.region is None else {"region": np.asarray(stack.region, np.int32)}  # classification
        return {"heatmaps": maps, "image_size": np.asarray([h, w], np.int32), **region, **signed}
    heat = np.zeros((len(dets), h, w), np.float16)
    for k, d in enumerate(dets):
        heat[k] = d.heatmap
    return {"heatmaps": heat, **signed}


def encode_maps_npz(heatmaps: np.ndarray, **arrays: np.ndarray) -> bytes:
    """`files.encode_npz(heatmaps=heatmaps.astype(float16), **arrays)` without the float16 copy of all
    maps: they are converted and compressed a few at a time (12 MP, 56 boxes: 137 MB less peak)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        with zf.open("heatmaps.npy", "w", force_zip64=True) as fh:
            np.lib.format.write_array_header_1_0(fh, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float16)),
                                                      "fortran_order": False, "shape": tuple(heatmaps.shape)})
            for lo in range(0, len(heatmaps), 8):
                fh.write(np.ascontiguousarray(heatmaps[lo:lo + 8], dtype=np.float16).tobytes())
        for name, array in arrays.items():
            with zf.open(f"{name}.npy", "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.asanyarray(array), allow_pickle=False)
    return buf.getvalue()
