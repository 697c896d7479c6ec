"""Progress of long runs: a tqdm bar on a terminal, periodic plain lines elsewhere (CI logs, `nohup`).

Thread-safe (the CLI's writer thread advances it). Off a terminal, a line is written at most every
`log_interval` seconds, like ultralytics in non-interactive consoles, and a last one at the end if
any was written (runs shorter than `log_interval` stay quiet: the command's summary line says it all):
`explain: 9/20 images (45%), 1.3/s, detections=12, 7s elapsed, 8s left`.
"""

from __future__ import annotations

import sys
import threading
import time


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    return f"{minutes}m{seconds:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


class Progress:
    """Counts finished items out of `total`.

    `enabled=None` draws a bar when `stream` is a terminal and writes periodic lines otherwise;
    `enabled=False` is silent; `enabled=True` forces the bar. `postfix` items (e.g. detections=12)
    are shown after the counts. `interval`: the bar's minimum redraw interval; `log_interval`: seconds
    between lines off a terminal.
    """

    def __init__(self, total: int | None, desc: str = "", stream=None, enabled: bool | None = None,
                 interval: float = 0.1, width: int | None = None, unit: str = "images", log_interval: float = 10.0):
        self.total = None if total is None else max(int(total), 0)  # None: not known (a live stream)
        self.desc, self.unit = desc, unit
        self.stream = stream if stream is not None else sys.stderr
        terminal = bool(getattr(self.stream, "isatty", lambda: False)())
        self.mode = "off" if enabled is False else ("bar" if enabled or terminal else "lines")
        self.enabled = self.mode != "off"
        self.log_interval = log_interval
        self.n = 0
        self.postfix: dict = {}
        self._start = time.monotonic()
        self._last_line = self._start
        self._lock = threading.Lock()
        self._closed = False
        self._bar = None
        if self.mode == "bar":
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, desc=desc, file=self.stream, mininterval=interval, unit={"images": "img"}.get(unit, unit),
                             ncols=width, dynamic_ncols=width is None, leave=True)
        self._lines = 0

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: int = 1, **postfix) -> None:
        """Advance by `n` items and set the shown `postfix` values."""
        with self._lock:
            if self._closed:
                return
            self.n += n
            self.postfix.update(postfix)
            if self._bar is not None:
                if postfix:
                    self._bar.set_postfix(self.postfix, refresh=False)
                self._bar.update(n)
            elif self.mode == "lines":
                now = time.monotonic()
                if now - self._last_line >= self.log_interval and (self.total is None or self.n < self.total):
                    self._last_line = now
                    self._write(self.line())

    def line(self) -> str:
        """The status as one line, e.g. `explain: 9/20 images (45%), 1.3/s, detections=12, 7s elapsed, 8s left`."""
        elapsed = max(time.monotonic() - self._start, 1e-9)
        rate = self.n / elapsed
        if self.total is None:
            parts = [f"{self.desc + ': ' if self.desc else ''}{self.n} {self.unit}"]
        else:
            parts = [f"{self.desc + ': ' if self.desc else ''}{self.n}/{self.total} {self.unit}"
                     f" ({self.n / self.total * 100 if self.total else 100:.0f}%)"]
        if self.n:
            parts.append(f"{rate:.1f}/s")
        parts += [f"{k}={v}" for k, v in self.postfix.items()]
        parts.append(f"{_duration(elapsed)} elapsed")
        if self.n and self.total is not None and self.n < self.total:
            parts.append(f"{_duration((self.total - self.n) / rate)} left")
        return ", ".join(parts)

    def _write(self, text: str) -> None:
        self._lines += 1
        self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        """End the bar, or write the final line (off a terminal)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._bar is not None:
                self._bar.close()
            elif self.mode == "lines" and self._lines:
                self._write(self.line())
