"""Writing explanation folders (`reader.py` reads them back), as fixed in the design.

    OUT/manifest.json
    OUT/<stem>/heatmaps.npz         heatmaps (N,H,W) float16, boxes (N,4) float32, classes (N,) int32, scores (N,) float32
    OUT/<stem>/<k:03d>_<name>.png   overlay per detection
    OUT/<stem>/crops/<k:03d>_<name>.png   (optional) the box's crop of the overlay
    OUT/index.html                  (optional) gallery

Every file is written under a temporary name and renamed, and the manifest is rewritten after
each image, so an interrupted run leaves only whole files and a manifest of what finished.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .files import atomic_write_bytes, encode_npz, encode_png, prepare_out_dir, safe_name
from .render import CROP_SIDE, blend_heatmap, box_crop, draw_box

if TYPE_CHECKING:  # results.py imports this module (ImageExplanation.save)
    from .results import ImageExplanation

MANIFEST_VERSION = 1


class ExportWriter:
    """Adds images to an output folder one by one.

    With `append` (the default) an existing manifest there is continued (its stems stay reserved);
    otherwise a fresh manifest replaces it.
    """

    def __init__(self, out_dir, meta: dict | None = None, html: bool = False, crops: bool = False,
                 append: bool = True):
        self.out = prepare_out_dir(out_dir)
        self.html, self.crops = html, crops
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
        for key in ("model", "method", "target", "layers"):
            if meta and key in meta:
                self.manifest[key] = meta[key]
        self.stems = {img["stem"].casefold() for img in self.manifest["images"]}
        self._image_json: list[str] = []  # each image entry serialised once, for the rewrites between images
        self._threads: ThreadPoolExecutor | None = None

    def __enter__(self) -> "ExportWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.finish()

    def unique_stem(self, path: str | None) -> str:
        """A folder name for `path`'s files, unique in this output (case-insensitively, for any file system)."""
        base = safe_name(Path(path).stem) if path else "image"
        stem, k = base, 2
        while stem.casefold() in self.stems:
            stem, k = f"{base}_{k}", k + 1
        self.stems.add(stem.casefold())
        return stem

    def add_error(self, path: str | None, error: str) -> None:
        self.manifest["errors"].append({"path": path, "error": error})
        self.write_manifest()

    def add(self, result: ImageExplanation) -> dict | None:
        """Write one image's files and update the manifest; returns its manifest entry."""
        if result.error is not None or result.image is None:
            self.add_error(result.path, result.error or "no image")
            return None
        for key in ("model", "method", "target", "layers"):
            if key in result.meta and not self.manifest.get(key):
                self.manifest[key] = result.meta[key]
        stem = self.unique_stem(result.path)
        folder = self.out / stem
        folder.mkdir(exist_ok=True)
        h, w = result.image.shape[:2]
        dets = result.detections
        npz = encode_npz(
            heatmaps=(np.stack([d.heatmap for d in dets]) if dets else np.zeros((0, h, w))).astype(np.float16),
            boxes=np.asarray([d.box for d in dets], np.float32).reshape(-1, 4),
            classes=np.asarray([d.cls for d in dets], np.int32),
            scores=np.asarray([d.conf for d in dets], np.float32),
        )
        atomic_write_bytes(folder / "heatmaps.npz", npz)
        def overlay_entry(k: int) -> dict:
            d = dets[k]
            name = f"{k:03d}_{safe_name(d.name)}.png"
            overlay = blend_heatmap(result.image, d.heatmap)
            draw_box(overlay, d.box, f"{d.name} {d.conf:.2f}")
            atomic_write_bytes(folder / name, encode_png(overlay))
            entry = {"index": k, **d.to_dict(), "overlay": f"{stem}/{name}"}
            if self.crops:
                entry["crop"] = self._write_crop(folder, name, result.image, d, stem)
            return entry

        # OpenCV drops the GIL while blending and encoding, so overlays are made on a few threads
        entries = list(self._pool().map(overlay_entry, range(len(dets)))) if len(dets) > 1 else \
            [overlay_entry(k) for k in range(len(dets))]
        image_entry = {"path": result.path, "stem": stem, "width": int(w), "height": int(h),
                       "heatmaps": f"{stem}/heatmaps.npz", "detections": entries}
        self.manifest["images"].append(image_entry)
        self.write_manifest()
        return image_entry

    def _pool(self) -> ThreadPoolExecutor:
        if self._threads is None:
            self._threads = ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1),
                                               thread_name_prefix="yolocam-overlay")
        return self._threads

    def _write_crop(self, folder: Path, name: str, image: np.ndarray, det, stem: str) -> str:
        """A zoomed view of the box plus context at full resolution (`render.box_crop`: only that region
        is blended), long side CROP_SIDE px; the gallery shows it as the detection's card."""
        (folder / "crops").mkdir(exist_ok=True)
        crop = box_crop(image, det.heatmap, det.box, f"{det.name} {det.conf:.2f}", size=CROP_SIDE)
        atomic_write_bytes(folder / "crops" / name, encode_png(crop))
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

    def finish(self) -> None:
        if self._threads is not None:
            self._threads.shutdown()
            self._threads = None
        self.write_manifest(final=True)
        if self.html:
            from .gallery import write_gallery

            write_gallery(self.out, self.manifest)
