"""Paths inside an output folder: nothing a run reads, writes or removes may leave it.

A path taken from a manifest (or made from an image's name) is used only when it is relative, has no
`..`, and no folder on the way from the output folder to it is a symbolic link (a link planted in the
folder could otherwise point a write or a removal anywhere). The output folder itself may be a link:
it is the user's choice, and everything is checked against its real location.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ..errors import YolocamError


def lexical_parts(rel) -> tuple[str, ...] | None:
    """The components of `rel` when it is a non-empty relative path without `..` (else None)."""
    if not isinstance(rel, str) or not rel or os.path.isabs(rel) or "\\" in rel or "\0" in rel:
        return None
    parts = Path(rel).parts
    if not parts or any(p in ("..", "", ".") for p in parts) or rel.startswith("/"):
        return None
    return parts


def inside(out, rel) -> Path | None:
    """`out / rel` when `rel` stays inside `out` on disk: lexically (`lexical_parts`), with no component
    below `out` that is a symbolic link or (above the last) a non-folder, and with its real path under the
    real `out`; else None. Components that do not exist yet are fine (a file about to be written)."""
    parts = lexical_parts(rel)
    if parts is None:
        return None
    out = Path(out)
    path = out
    for k, part in enumerate(parts):
        path = path / part
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            break  # the rest does not exist: nothing on disk can redirect it
        except OSError:
            return None
        if stat.S_ISLNK(mode) or (k < len(parts) - 1 and not stat.S_ISDIR(mode)):
            return None
    real_out = os.path.realpath(out)
    real = os.path.realpath(out / Path(*parts))
    if os.path.commonpath([real_out, real]) != real_out:
        return None
    return out / Path(*parts)


def checked_dir(out, rel: str) -> Path:
    """The folder `out / rel`, created when missing, for writing into; a `YolocamError` when it (or a folder on
    the way) is a symbolic link, a file, or leaves `out`."""
    path = inside(out, rel)
    if path is None:
        raise YolocamError(f"refusing to write into {Path(out) / rel}: it is a symbolic link or leaves the output "
                           f"folder {out}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise YolocamError(f"cannot write into {path}: a file of that name is in the way") from None
    if inside(out, rel) is None or not path.is_dir():  # made by someone else meanwhile
        raise YolocamError(f"refusing to write into {path}: it is a symbolic link or leaves the output folder {out}")
    return path


def is_within(path, folder) -> bool:
    """True when `path`'s real location is `folder`'s real location or below it."""
    real_folder = os.path.realpath(folder)
    return os.path.commonpath([real_folder, os.path.realpath(path)]) == real_folder


def outside_folder(entries: list, folder) -> tuple[list, int]:
    """(the `entries` that are not files under `folder`, how many were), arrays kept: a run never takes
    its own output folder (overlays, crops of an earlier run) as a source."""
    if folder is None or not os.path.isdir(folder):
        return list(entries), 0
    kept = [e for e in entries if not isinstance(e, (str, os.PathLike)) or not is_within(e, folder)]
    return kept, len(entries) - len(kept)
