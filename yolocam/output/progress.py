"""A minimal progress bar on stderr: drawn only on a terminal, silent otherwise.

Thread-safe (the CLI's writer thread advances it). No third-party dependency.
"""

from __future__ import annotations

import sys
import threading
import time


class Progress:
    """Counts finished items out of `total` and redraws one status line at most every `interval` s.

    `enabled=None` draws only when `stream` is a terminal; `postfix` items (e.g. detections=12)
    are shown after the bar.
    """

    def __init__(self, total: int, desc: str = "", stream=None, enabled: bool | None = None,
                 interval: float = 0.1, width: int = 24):
        self.total, self.desc, self.width, self.interval = max(int(total), 0), desc, width, interval
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self.enabled = enabled
        self.n = 0
        self.postfix: dict = {}
        self._start = time.monotonic()
        self._last_draw = 0.0
        self._lock = threading.Lock()
        self._closed = False
        self._draw(force=True)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: int = 1, **postfix) -> None:
        """Advance by `n` items and set the shown `postfix` values."""
        with self._lock:
            self.n += n
            self.postfix.update(postfix)
            self._draw(force=self.n >= self.total)

    def line(self) -> str:
        """The status line, e.g. `explain  45%|#####      | 9/20 images 1.3/s detections=12`."""
        elapsed = max(time.monotonic() - self._start, 1e-9)
        frac = self.n / self.total if self.total else 1.0
        filled = int(round(frac * self.width))
        bar = "#" * filled + " " * (self.width - filled)
        extra = " ".join(f"{k}={v}" for k, v in self.postfix.items())
        return f"{self.desc} {frac * 100:3.0f}%|{bar}| {self.n}/{self.total} {self.n / elapsed:.1f}/s {extra}".rstrip()

    def _draw(self, force: bool = False) -> None:
        if not self.enabled or self._closed:
            return
        now = time.monotonic()
        if not force and now - self._last_draw < self.interval:
            return
        self._last_draw = now
        self.stream.write("\r\x1b[K" + self.line())
        self.stream.flush()

    def close(self) -> None:
        """Draw the final state and end the line (terminal only)."""
        with self._lock:
            if self._closed:
                return
            self._draw(force=True)
            self._closed = True
            if self.enabled:
                self.stream.write("\n")
                self.stream.flush()
