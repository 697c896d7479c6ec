"""The command line (`yolocam`, `python -m yolocam`) and the benchmark behind `yolocam bench`."""

from .main import main

__all__ = ["main"]
