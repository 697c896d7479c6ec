"""Import ultralytics so that it never reaches for the network.

yolocam must work on machines with no internet: no weight, font or dataset downloads,
no telemetry. Importing this module before ultralytics sets its offline switches.
"""

from __future__ import annotations

import os

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_VERBOSE", "False")


def ultralytics_offline() -> None:
    """Turn off ultralytics' settings that would talk to the network (idempotent)."""
    try:
        from ultralytics.utils import SETTINGS
    except Exception:  # pragma: no cover - ultralytics is a hard dependency
        return
    wanted = {"sync": False, "hub": False}
    try:
        if any(SETTINGS.get(k) != v for k, v in wanted.items()):
            SETTINGS.update(wanted)
    except Exception:  # a read-only settings file must not stop an explanation
        pass


ultralytics_offline()
