"""Text for the terminal and for file names: user-controlled strings (file names, class names, messages) with their control
characters escaped, so that a name cannot retitle, clear or recolour the terminal.

A base module (no imports): the command line (`cli/terminal.py`) and the layers that print their own
lines (validation, Ray) share it. Files yolocam writes keep the real names; only what is printed is escaped.
"""

from __future__ import annotations

import re
import unicodedata


def _escape(ch: str) -> str:
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(text, keep: str = "") -> str:
    """`text` (made a str) with every non-printable character (C0/C1 controls such as ESC and BEL, line
    and paragraph separators, bidirectional and other format characters) written as a `\\x1b`-style
    escape; ordinary Unicode (letters, CJK, emoji, the space) is kept, and so are the characters in
    `keep` (e.g. "\\n" for a multi-line table)."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() or ch in keep else _escape(ch) for ch in text)


def safe_name(text: str, max_bytes: int = 200) -> str:
    """`text` as a file name: letters and digits of any script (combining marks included), `_`, `.` and
    `-` are kept, each run of anything else becomes `_`; NFC-normalised (one spelling for both Unicode
    forms), at most `max_bytes` in UTF-8, never empty (`x`)."""
    text = unicodedata.normalize("NFC", text)
    kept = "".join(c if c in "_.-" or unicodedata.category(c)[0] in "LNM" else "\0" for c in text)
    name = re.sub("\0+", "_", kept).strip("._")
    while len(name.encode("utf-8")) > max_bytes:
        name = name[:-1]
    return name.rstrip("._") or "x"
