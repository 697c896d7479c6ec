"""Writing (and reading back) explanation folders, as fixed in the design.

    OUT/manifest.json
    OUT/<stem>/heatmaps.npz         heatmaps (N,H,W) float16, boxes (N,4) float32, classes (N,) int32, scores (N,) float32
    OUT/<stem>/<k:03d>_<name>.png   overlay per detection
    OUT/<stem>/crops/<k:03d>_<name>.png   (optional) the box's crop of the overlay
    OUT/index.html                  (optional) gallery

Every file is written under a temporary name and renamed, and the manifest is rewritten after
each image, so an interrupted run leaves only whole files and a manifest of what finished.
"""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path

import cv2
import numpy as np

from .errors import YolocamError
from .results import DetectionExplanation, ImageExplanation, blend_heatmap, draw_box

MANIFEST_VERSION = 1


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` via a temporary file in the same folder and a rename."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def encode_png(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise YolocamError(f"cannot encode PNG of shape {image.shape}")
    return buf.tobytes()


def prepare_out_dir(out_dir) -> Path:
    """Create `out_dir` and check that files can be written there (before any work is done)."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".yolocam-write-test{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise YolocamError(f"output folder not writable: {out} ({exc.strerror or exc})") from None
    return out


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "x"


class ExportWriter:
    """Adds images to an output folder one by one (continuing an existing manifest there)."""

    def __init__(self, out_dir, meta: dict | None = None, html: bool = False, crops: bool = False):
        self.out = prepare_out_dir(out_dir)
        self.html, self.crops = html, crops
        self.manifest = {"version": MANIFEST_VERSION, "model": "", "method": "", "target": "", "layers": None,
                         "images": [], "errors": []}
        existing = self.out / "manifest.json"
        if existing.exists():
            try:
                self.manifest.update(json.loads(existing.read_text()))
            except (OSError, ValueError):
                pass  # an unreadable manifest is replaced
        for key in ("model", "method", "target", "layers"):
            if meta and key in meta:
                self.manifest[key] = meta[key]
        self.stems = {img["stem"] for img in self.manifest["images"]}

    def __enter__(self) -> "ExportWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.finish()

    def unique_stem(self, path: str | None) -> str:
        base = safe_name(Path(path).stem) if path else "image"
        stem, k = base, 2
        while stem in self.stems:
            stem, k = f"{base}_{k}", k + 1
        self.stems.add(stem)
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
        buf = io.BytesIO()
        np.savez_compressed(
            buf,
            heatmaps=(np.stack([d.heatmap for d in dets]) if dets else np.zeros((0, h, w))).astype(np.float16),
            boxes=np.asarray([d.box for d in dets], np.float32).reshape(-1, 4),
            classes=np.asarray([d.cls for d in dets], np.int32),
            scores=np.asarray([d.conf for d in dets], np.float32),
        )
        atomic_write_bytes(folder / "heatmaps.npz", buf.getvalue())
        entries = []
        for k, d in enumerate(dets):
            name = f"{k:03d}_{safe_name(d.name)}.png"
            overlay = blend_heatmap(result.image, d.heatmap)
            draw_box(overlay, d.box, f"{d.name} {d.conf:.2f}")
            atomic_write_bytes(folder / name, encode_png(overlay))
            entry = {"index": k, **d.to_dict(), "overlay": f"{stem}/{name}"}
            if self.crops:
                entry["crop"] = self._write_crop(folder, name, overlay, d.box, stem)
            entries.append(entry)
        image_entry = {"path": result.path, "stem": stem, "width": int(w), "height": int(h),
                       "heatmaps": f"{stem}/heatmaps.npz", "detections": entries}
        self.manifest["images"].append(image_entry)
        self.write_manifest()
        return image_entry

    def _write_crop(self, folder: Path, name: str, overlay: np.ndarray, box, stem: str) -> str:
        (folder / "crops").mkdir(exist_ok=True)
        h, w = overlay.shape[:2]
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        x1, y1 = min(max(x1, 0), w - 1), min(max(y1, 0), h - 1)
        x2, y2 = max(min(x2, w), x1 + 1), max(min(y2, h), y1 + 1)
        atomic_write_bytes(folder / "crops" / name, encode_png(overlay[y1:y2, x1:x2]))
        return f"{stem}/crops/{name}"

    def write_manifest(self) -> None:
        data = json.dumps(self.manifest, indent=1).encode()
        atomic_write_bytes(self.out / "manifest.json", data)

    def finish(self) -> None:
        self.write_manifest()
        if self.html:
            from .gallery import write_gallery

            write_gallery(self.out, self.manifest)


def load_output(out_dir) -> list[ImageExplanation]:
    """Read an output folder written by `ExportWriter` back into `ImageExplanation` objects.

    Images are read from their recorded paths when those still exist (else `image` is None).
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
    for img in manifest.get("images", []):
        with np.load(out / img["heatmaps"]) as npz:
            heatmaps = npz["heatmaps"].astype(np.float32)
        path = img.get("path")
        image = cv2.imread(path) if path and Path(path).is_file() else None
        dets = [
            DetectionExplanation(list(d["box"]), d["cls"], d["name"], d["conf"], d["anchor"], d["level"], heatmaps[k])
            for k, d in enumerate(img["detections"])
        ]
        results.append(ImageExplanation(path, image, dets, meta=dict(meta, stem=img["stem"])))
    for err in manifest.get("errors", []):
        results.append(ImageExplanation(err.get("path"), None, [], error=err.get("error"), meta=dict(meta)))
    return results
