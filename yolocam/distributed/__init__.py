"""Explain and validate datasets on a Ray cluster (optional extra: `pip install "yolocam[ray]"`).

`explain_dataset` (`yolocam explain --ray`) and `validate_dataset` (`yolocam val --ray`) run the same
work as the single-process commands as a Ray Data pipeline, so one command runs on a laptop, a
multi-GPU workstation or a cluster. Ray is imported only when one of them runs.
"""

from __future__ import annotations


def explain_dataset(*args, **kwargs):
    """See `yolocam.distributed.explain.explain_dataset`."""
    from .explain import explain_dataset as run

    return run(*args, **kwargs)


def validate_dataset(*args, **kwargs):
    """See `yolocam.distributed.val.validate_dataset`."""
    from .val import validate_dataset as run

    return run(*args, **kwargs)


__all__ = ["explain_dataset", "validate_dataset"]
