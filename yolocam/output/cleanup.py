"""Reusing an output folder: remove exactly what yolocam's previous run there wrote.

A previous run is described by its manifest.json: every image's `heatmaps`, each detection's
`overlay` and `crop`, the `pending` files of an image being written when the run stopped, and
the other `files` it wrote (gallery, summary). Those files are removed, then folders left empty
by that, then temporary files (`.<name>.tmp<pid>-<thread>`, `atomic_write_bytes`) of runs that
are no longer alive. Nothing else in the folder is touched; a listed path that leaves the folder, or that a
symbolic link on the way would redirect, is skipped (`paths.inside`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path

from .lock import LOCK_NAME
from .paths import inside

TEMP_NAME = re.compile(r"^\..+\.tmp(\d+)-\d+$|^\.yolocam-write-test(\d+)$")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def is_temp_file(name: str) -> bool:
    return TEMP_NAME.match(name) is not None


def remove_listed(out: Path, rels) -> list[Path]:
    """Remove the plain files `rels` (relative to `out`), then their folders when that leaves them empty."""
    out, removed, folders = Path(out), [], set()
    for rel in rels:
        path = inside(out, rel)  # None for a path that leaves `out`, or that a symbolic link on the way redirects
        if path is None or path.is_symlink() or not path.is_file():
            continue
        with contextlib.suppress(OSError):
            path.unlink()
            removed.append(path)
            folders.update(p for p in path.parents if p != out and out in p.parents)  # real folders: `inside`
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):  # deepest first
        _remove_temp_files(folder)
        with contextlib.suppress(OSError):
            folder.rmdir()  # only when empty
    return removed


def _remove_temp_files(folder: Path) -> None:
    with contextlib.suppress(OSError):
        for entry in folder.iterdir():
            m = TEMP_NAME.match(entry.name)
            if m and entry.is_file() and not entry.is_symlink() and not _pid_alive(int(m.group(1) or m.group(2))):
                with contextlib.suppress(OSError):
                    entry.unlink()


def listed_files(manifest) -> list[str]:
    """Every file a yolocam manifest says its run wrote (relative paths), the manifest itself last."""
    if not isinstance(manifest, dict) or not isinstance(manifest.get("images"), list):
        return []
    rels: list[str] = []
    for img in manifest["images"]:
        if not isinstance(img, dict):
            continue
        rels.append(img.get("heatmaps"))
        for det in img.get("detections") or []:
            if isinstance(det, dict):
                rels += [det.get("overlay"), det.get("crop")]
    for key in ("pending", "files"):
        if isinstance(manifest.get(key), list):
            rels += manifest[key]
    return [r for r in rels if isinstance(r, str)] + ["manifest.json"]


def read_manifest(out: Path):
    """The folder's manifest.json as read by JSON, or None (missing, unreadable, or a symbolic link)."""
    path = Path(out) / "manifest.json"
    if path.is_symlink():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def clear_previous(out) -> list[Path]:
    """Remove what the previous run's manifest in `out` lists, and dead runs' temporary files; returns
    the removed files. A folder without a readable yolocam manifest loses only temporary files."""
    out = Path(out)
    manifest = read_manifest(out)
    removed = remove_listed(out, listed_files(manifest))  # nothing for an unreadable or foreign manifest
    remove_temp_files(out)
    return removed


def remove_temp_files(out) -> None:
    """Remove temporary files of runs no longer alive from `out`, its image folders and their crops/."""
    out = Path(out)
    _remove_temp_files(out)
    with contextlib.suppress(OSError):
        for sub in out.iterdir():
            if sub.is_dir() and not sub.is_symlink():
                for folder in (sub / "crops", sub):
                    if folder.is_dir() and not folder.is_symlink():
                        _remove_temp_files(folder)


def folder_in_use(out) -> bool:
    """True when `out` exists and holds anything but temporary files (so a new run would mix with it)."""
    out = Path(out)
    if not out.exists():
        return False
    if not out.is_dir():
        return True
    return any(not is_temp_file(p.name) and p.name != LOCK_NAME for p in out.iterdir())
