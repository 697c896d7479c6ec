"""Continuing a video run (`explain --resume`): the frames an earlier run finished are replayed, not explained.

`distributed/resume.py` decides what is kept: per video file, the earlier run's entries of the first frames
in order (`kept`: path -> frame -> manifest entry), each whole and with its files present. While the
video is read again, a kept frame is not explained: its detections and maps are read back from its
heatmaps.npz onto the frame decoded again (`ResumedFrame`), and the writer (`video.py`) lists its entry as
it was and draws it into the annotated video and the track log as an explained frame is drawn. OpenCV
cannot append to an mp4, so the annotated video is written again from the first frame; with tracking, the
tracker is run over the kept frames' recorded boxes (the same numbers it was given the first time), so the
track ids of the frames explained now continue those of the earlier run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import YolocamError
from ..model.segment import PolygonMask
from .maps import MapRef, MapStack
from .paths import inside
from .results import DetectionExplanation, ImageExplanation


@dataclass
class ResumedFrame(ImageExplanation):
    """A frame an earlier run finished: its detections read back, `entry` its manifest entry as written."""

    entry: dict = field(default_factory=dict)


@dataclass
class VideoResume:
    """What an earlier run into `out` leaves for this one: `kept` (video path -> frame -> entry), `entries` (the
    kept entries in the earlier manifest's order), `records` (video path -> the earlier video record) and
    `drop` (every other file the earlier manifest lists, removed before the run)."""

    out: Path
    kept: dict = field(default_factory=dict)
    entries: list = field(default_factory=list)
    records: dict = field(default_factory=dict)
    drop: list = field(default_factory=list)

    def wants(self, item) -> bool:
        """Whether `item` (a decoded frame) is one the earlier run finished."""
        frame = getattr(item, "frame", None)
        return frame is not None and frame in self.kept.get(getattr(item, "path", None), ())

    def replay(self, item, meta: dict) -> ResumedFrame:
        """The kept frame `item` as a result: its entry's detections, maps from its heatmaps.npz."""
        entry = self.kept[item.path][item.frame]
        h, w = item.image.shape[:2]
        if (entry.get("height"), entry.get("width")) != (h, w):
            raise YolocamError(f"cannot resume {item.path}: frame {item.frame} is {w}x{h}, the earlier run's was "
                               f"{entry.get('width')}x{entry.get('height')} (the video changed); rerun without --resume")
        dets = entry_detections(self.out, entry)
        return ResumedFrame(item.path, item.image, dets, meta=dict(meta), frame=item.frame, source=item.source,
                            entry=entry)


def entry_detections(out: Path, entry: dict) -> list[DetectionExplanation]:
    """The detections of a manifest entry with their maps (kept compact, as `reader.load_output` reads them)."""
    path = inside(out, entry.get("heatmaps"))
    try:
        if path is None:
            raise ValueError("the path leaves the output folder")
        with np.load(path, allow_pickle=False) as npz:
            maps = npz["heatmaps"]
            size = tuple(int(v) for v in npz["image_size"]) if "image_size" in npz else maps.shape[1:]
            region = npz["region"].tolist() if "region" in npz else None
            signed = bool(npz["signed"]) if "signed" in npz else False
        if tuple(size) != (entry["height"], entry["width"]) or len(maps) != len(entry["detections"]):
            raise ValueError(f"maps of {len(maps)} boxes for a {size} image")
        stack = MapStack(maps, size, region, signed=signed)
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise YolocamError(f"cannot resume: unreadable {entry.get('heatmaps')} ({' '.join(str(exc).split())}); "
                           "rerun without --resume") from None
    hw = (int(entry["height"]), int(entry["width"]))
    return [DetectionExplanation(list(d["box"]), d["cls"], d["name"], d["conf"], d["anchor"], d["level"],
                                 MapRef(stack, k), reason=d.get("reason"), rbox=d.get("rbox"), polygon=d.get("polygon"),
                                 keypoints=d.get("keypoints"), track_id=d.get("track"),
                                 instance_mask=PolygonMask(d["segments"], hw) if "segments" in d else None)
            for k, d in enumerate(entry["detections"])]
