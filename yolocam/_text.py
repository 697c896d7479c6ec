"""Text for the terminal: user-controlled strings (file names, class names, messages) with their control
characters escaped, so that a name cannot retitle, clear or recolour the terminal.

A base module (no imports): the command line (`cli/terminal.py`) and the layers that print their own
lines (validation, Ray) share it. Files yolocam writes keep the real names; only what is printed is escaped.
"""

from __future__ import annotations


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
