"""`python -m yolocam ...`: the same command line as the `yolocam` console script."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
