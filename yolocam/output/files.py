"""Files on disk: atomic writes, encoders, output folders and safe names (nothing here knows about results)."""

from __future__ import annotations

import contextlib
import io
import os
import threading
import zipfile
from pathlib import Path

import cv2
import numpy as np

from .._text import safe_name  # noqa: F401  (re-exported: output names use it)
from ..errors import YolocamError


def atomic_write_bytes(path: Path, data: bytes, sync: bool = True) -> None:
    """Write `data` to `path` via a temporary file in the same folder and a rename (fsynced first
    unless `sync` is False: the file is then still never seen half-written by other processes).

    The temporary file is created exclusively and never through a symbolic link, and the rename replaces
    a link at `path` rather than writing through it: nothing outside the folder is written.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}-{threading.get_ident()}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)  # a leftover of this pid and thread (or a planted link): never written through
        with os.fdopen(os.open(tmp, flags, 0o644), "wb") as fh:
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
        with contextlib.suppress(FileNotFoundError):
            os.unlink(probe)  # a leftover (or a planted link) is removed, never written through
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644))
        probe.unlink()
    except FileExistsError:
        raise YolocamError(f"output folder {out} is a file, not a folder") from None
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
