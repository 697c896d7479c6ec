"""One run owns an output folder at a time: an exclusive lock on `OUT/.yolocam-lock`.

The lock is the operating system's (`fcntl.flock`; `msvcrt.locking` on Windows), so it dies with
its process: the lock file of a killed run is simply taken over. The file holds the owner's pid,
command line and start time, so that a second run can say which run it is waiting for; it is removed
when the lock is released. Within one process the lock is re-entrant (a CLI command that holds it may
call API functions that take it again).

Why not the `filelock` package: it truncates the lock file on every attempt (the owner's identity
would be erased by the run being refused), and a refusal here must name the running owner.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
from pathlib import Path

from ..errors import YolocamError

LOCK_NAME = ".yolocam-lock"

_held: dict[str, list] = {}  # real folder path -> [fd, count]
_held_guard = threading.Lock()


def _try_lock(fd: int) -> bool:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _owner(path: Path) -> str:
    """The running owner as the refusal names it, from the lock file's text."""
    try:
        info = json.loads(path.read_text())
        cmd = info.get("command") or "?"
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(info.get("started", 0))))
        return f"pid {int(info['pid'])} on {info.get('host', '?')}, started {started}: {cmd!r}"
    except (OSError, ValueError, KeyError, TypeError):
        return "owner unknown"


def _open_lock_file(path: Path) -> int:
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        return os.open(path, flags, 0o644)
    except OSError as exc:
        raise YolocamError(f"cannot lock output folder {path.parent}: {exc.strerror or exc} ({path})") from None


def acquire(folder) -> str:
    """Lock `folder` (which must exist) for this process; returns its key for `release`. A `YolocamError`
    names the other run when one holds it."""
    key = os.path.realpath(folder)
    with _held_guard:
        if key in _held:
            _held[key][1] += 1
            return key
        path = Path(key) / LOCK_NAME
        for _ in range(20):  # the owner may remove the file between our open and our lock: open again
            fd = _open_lock_file(path)
            if not _try_lock(fd):
                os.close(fd)
                raise YolocamError(f"output folder {folder} is in use by another yolocam run ({_owner(path)}); "
                                   "wait for it to finish or choose another --out")
            try:
                same = os.fstat(fd).st_ino == os.stat(path, follow_symlinks=False).st_ino
            except OSError:
                same = False
            if same:
                break
            os.close(fd)
        else:
            raise YolocamError(f"cannot lock output folder {folder}: its lock file keeps changing")
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                "command": " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))}
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps(info).encode())
        _held[key] = [fd, 1]
        return key


def release(key: str) -> None:
    """Undo one `acquire`; the last one removes the lock file and unlocks. Safe to call for a key not held."""
    with _held_guard:
        entry = _held.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] > 0:
            return
        del _held[key]
        fd = entry[0]
        with contextlib.suppress(OSError):
            os.unlink(Path(key) / LOCK_NAME)  # while still locked: a waiting run then locks a fresh file
        with contextlib.suppress(OSError):
            os.close(fd)  # closing releases the lock


def holds(folder) -> bool:
    """True when this process holds `folder`'s lock."""
    return os.path.realpath(folder) in _held


@contextlib.contextmanager
def owning(folder):
    """`with owning(out):` the folder (created if missing) is this run's until the block ends."""
    from .files import prepare_out_dir

    prepare_out_dir(folder)
    key = acquire(folder)
    try:
        yield Path(folder)
    finally:
        release(key)
