"""Text for the terminal: user-controlled strings (file names, class names, messages) with their control
characters escaped, so that a name cannot retitle, clear or recolour the terminal.

Files yolocam writes (manifest.json, CSVs, the gallery) keep the real names; only what is printed is
escaped. No heavy imports.
"""

from __future__ import annotations


from .._text import printable  # noqa: F401  (shared with the layers that print their own lines)


def plural(n: int, noun: str) -> str:
    """`1 image`, `2 images`, `0 images`."""
    return f"{n} {noun}{'' if n == 1 else 's'}"
