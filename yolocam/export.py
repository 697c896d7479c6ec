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

import contextlib
import io
import json
import os
import re
import threading
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from .errors import YolocamError
from .results import DetectionExplanation, ImageExplanation, blend_heatmap, draw_box

MANIFEST_VERSION = 1


def atomic_write_bytes(path: Path, data: bytes, sync: bool = True) -> None:
    """Write `data` to `path` via a temporary file in the same folder and a rename (fsynced first
    unless `sync` is False: the file is then still never seen half-written by other processes)."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}-{threading.get_ident()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            if sync:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def encode_png(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise YolocamError(f"cannot encode PNG of shape {image.shape}")
    return buf.tobytes()


def encode_npz(**arrays: np.ndarray) -> bytes:
    """A compressed `.npz` (as `np.savez_compressed`, read by `np.load`) at zlib level 1: heatmaps' float16
    mantissas barely compress, so higher levels cost ~1.7x the time for the same size."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for name, array in arrays.items():
            with zf.open(f"{name}.npy", "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.asanyarray(array), allow_pickle=False)
    return buf.getvalue()


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


def increment_dir(path) -> Path:
    """`path` itself if it does not exist yet, else the first free `path2`, `path3`, ... (as ultralytics)."""
    path = Path(path)
    if not path.exists():
        return path
    k = 2
    while path.with_name(f"{path.name}{k}").exists():
        k += 1
    return path.with_name(f"{path.name}{k}")


def safe_name(text: str) -> str:
    """`text` reduced to a file-name-safe `[A-Za-z0-9_.-]` string (never empty)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "x"


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
                entry["crop"] = self._write_crop(folder, name, overlay, d.box, stem)
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

    def _write_crop(self, folder: Path, name: str, overlay: np.ndarray, box, stem: str) -> str:
        (folder / "crops").mkdir(exist_ok=True)
        h, w = overlay.shape[:2]
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        x1, y1 = min(max(x1, 0), w - 1), min(max(y1, 0), h - 1)
        x2, y2 = max(min(x2, w), x1 + 1), max(min(y2, h), y1 + 1)
        atomic_write_bytes(folder / "crops" / name, encode_png(overlay[y1:y2, x1:x2]))
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


def summary_grid(result: ImageExplanation, tile: int = 320, max_tiles: int = 48) -> np.ndarray:
    """One BGR picture: the image with all boxes, then each detection's heatmap overlay, in a grid.

    Each tile is `tile` x (`tile` + caption) pixels; at most `max_tiles` tiles (highest confidence first).
    """
    if result.image is None:
        raise YolocamError(f"summary_grid: expected an explained image, got an error result ({result.error})")
    dets = result.detections[: max(max_tiles - 1, 0)]
    shown = f" (showing {len(dets)})" if len(dets) < len(result.detections) else ""
    tiles = [_tile(result.image, None, result.detections, tile, f"{len(result.detections)} detections{shown}")]
    for k, d in enumerate(dets):
        overlay = blend_heatmap(result.image, d.heatmap)
        tiles.append(_tile(overlay, k, [d], tile, f"#{k} {d.name} {d.conf:.2f}"))
    cols = int(np.ceil(np.sqrt(len(tiles))))
    rows = int(np.ceil(len(tiles) / cols))
    th, tw = tiles[0].shape[:2]
    grid = np.full((rows * th, cols * tw, 3), 40, np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        grid[r * th:(r + 1) * th, c * tw:(c + 1) * tw] = t
    return grid


def _tile(image: np.ndarray, index: int | None, dets, size: int, caption: str) -> np.ndarray:
    """`image` fitted into a size x size square (boxes of `dets` drawn at that scale) above a caption strip."""
    h, w = image.shape[:2]
    gain = size / max(h, w)
    nw, nh = max(int(round(w * gain)), 1), max(int(round(h * gain)), 1)
    small = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA)
    for k, d in enumerate(dets):
        label = d.name if index is not None else f"{k} {d.name}"
        draw_box(small, [v * gain for v in d.box], label)
    cap = 22
    out = np.full((size + cap, size, 3), 40, np.uint8)
    top, left = (size - nh) // 2, (size - nw) // 2
    out[top:top + nh, left:left + nw] = small
    cv2.putText(out, caption, (4, size + cap - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    cv2.rectangle(out, (0, 0), (size - 1, size + cap - 1), (90, 90, 90), 1)
    return out


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
        try:
            with np.load(out / img["heatmaps"]) as npz:
                heatmaps = npz["heatmaps"].astype(np.float32)
        except (OSError, KeyError, ValueError) as exc:
            raise YolocamError(f"unreadable heatmaps for {img.get('stem')!r} in {out}: {exc}") from None
        if len(heatmaps) != len(img["detections"]):
            raise YolocamError(f"{img['heatmaps']}: expected {len(img['detections'])} heatmaps (as in the "
                               f"manifest), got {len(heatmaps)}")
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
