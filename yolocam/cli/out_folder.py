"""The commands' output folders: choosing `--out`, owning it while a command runs, reusing it.

Named as ultralytics names run folders (runs/yolocam/<name>N). One command owns its folder at a time
(`output/lock.py`); reusing one (`--exist-ok`) removes only what yolocam's previous run there wrote
(`output/cleanup.py`); the output folder is never part of the source.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from ..errors import YolocamError

RUNS_DIR = Path("runs") / "yolocam"


def out_dir(arg: str | None, name: str, exist_ok: bool = False) -> tuple[Path, bool]:
    """(output folder, whether it already existed), named as ultralytics names run folders: `arg`, or
    the next free runs/yolocam/<name>N (runs/yolocam/<name> itself with `exist_ok`).

    A folder that already holds files (other than temporary files of killed runs) is refused unless
    `exist_ok`; `reuse` then removes what yolocam's previous run there wrote, and nothing else.
    """
    from ..output.cleanup import folder_in_use
    from ..output.files import increment_dir

    out = Path(arg) if arg else (RUNS_DIR / name if exist_ok else increment_dir(RUNS_DIR / name))
    if out.exists() and not out.is_dir():
        raise YolocamError(f"--out {out} is a file, not a folder")
    if not exist_ok and folder_in_use(out):
        raise YolocamError(f"output folder {out} already exists and is not empty; pass --exist-ok to reuse it "
                           "(the files yolocam's previous run there wrote are removed first) or choose another --out")
    return out, out.exists()


def reuse(out: Path, existed: bool) -> None:
    """Before writing into an existing folder: remove the files its yolocam manifest lists (previous
    run's overlays, maps, gallery, ...) and temporary files left by killed runs."""
    from ..output.cleanup import clear_previous

    if existed:
        clear_previous(out)


def drop_if_empty(out: Path, existed: bool) -> None:
    if not existed:
        with contextlib.suppress(OSError):
            out.rmdir()


@contextlib.contextmanager
def owned(out: Path, existed: bool, exist_ok: bool):
    """While the command runs, `out` (created here) is locked for it (`output/lock.py`): a second run into
    the same folder is refused in one line naming this one. The emptiness check is repeated under the lock
    (two runs started together into a new folder). A folder this command created is removed again when
    nothing was written into it."""
    from ..output.cleanup import folder_in_use
    from ..output.files import prepare_out_dir
    from ..output.lock import acquire, release

    prepare_out_dir(out)
    try:
        key = acquire(out)
    except BaseException:
        drop_if_empty(out, existed)
        raise
    try:
        if not exist_ok and folder_in_use(out):
            raise YolocamError(f"output folder {out} already exists and is not empty; pass --exist-ok to reuse it "
                               "or choose another --out")
        yield out
    finally:
        release(key)
        drop_if_empty(out, existed)


def outside_out(entries: list, out: Path) -> list:
    """The source images that are not inside the output folder (a recursive source around `--out` would
    otherwise take an earlier run's overlays and crops as images); says how many were left out."""
    from . import notes
    from ..output.paths import outside_folder

    kept, dropped = outside_folder(entries, out)
    if dropped:
        notes.note(f"{dropped} source file{'s' if dropped != 1 else ''} inside the output folder {out} left out")
    if not kept:
        raise YolocamError(f"every source image is inside the output folder {out}; choose another --out")
    return kept
