"""Tracks over video frames: ultralytics' own trackers give each box an id; per track, its maps in box
coordinates and their temporal stability.

`TrackAssigner` runs one tracker (`bytetrack.yaml`, `botsort.yaml`, or a YAML of the user's with one of
those `tracker_type`s) per video or stream, as `YOLO.track` does, and sets `DetectionExplanation.track_id`
on the boxes the tracker matched (boxes it has not confirmed yet keep None; unlike `YOLO.track`, no box is
dropped and each keeps its own coordinates). `TrackLog` collects, per track, each frame's map resampled
onto the box (`BOX_MAP_SIDE` x `BOX_MAP_SIDE`, box-normalised coordinates) and summarises the track:
stability = the mean Pearson correlation of the box-normalised maps of consecutive observations, beside
the mean IoU of consecutive boxes (how much the box itself moved between them).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import YolocamError

BOX_MAP_SIDE = 32  # side of a track's maps in box-normalised coordinates
STRIP_THUMBS = 16  # at most this many crops per track are kept for its strip picture (evenly spaced)
THUMB_SIDE = 96  # long side of a strip crop, pixels
TRACKERS = ("bytetrack.yaml", "botsort.yaml")
_SUPPORTED_TYPES = ("bytetrack", "botsort")


def load_tracker_config(tracker: str):
    """The tracker's settings (ultralytics' YAML by name, or a file of the user's), checked: no URL (nothing is
    downloaded), a `tracker_type` yolocam can drive, and no ReID model (it would need extra weights)."""
    from ultralytics.utils import YAML, IterableSimpleNamespace
    from ultralytics.utils.checks import check_yaml

    from ..inputs.streams import require_package

    require_package("lap", "tracking (track=True, --track)", "lap  (or yolocam[track])")
    if not isinstance(tracker, (str, os.PathLike)) or "://" in str(tracker):
        raise YolocamError(f"tracker: expected one of {', '.join(TRACKERS)} or a tracker YAML file, got {tracker!r}")
    try:
        path = check_yaml(str(tracker))
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise YolocamError(f"tracker {tracker!r} not found: expected one of {', '.join(TRACKERS)} or a tracker "
                           f"YAML file ({' '.join(str(exc).split())})") from None
    cfg = IterableSimpleNamespace(**(YAML.load(path) or {}))
    kind = getattr(cfg, "tracker_type", None)
    if kind not in _SUPPORTED_TYPES:
        raise YolocamError(f"tracker {tracker!r}: tracker_type {kind!r} is not supported; expected one of "
                           f"{', '.join(_SUPPORTED_TYPES)}")
    if getattr(cfg, "with_reid", False):
        raise YolocamError(f"tracker {tracker!r}: with_reid needs a ReID model, which yolocam does not load; set "
                           "with_reid: False")
    return cfg


class TrackAssigner:
    """Sets `track_id` on the detections of each frame, one tracker per source path (reset for a new video)."""

    def __init__(self, tracker: str = "bytetrack.yaml"):
        from ultralytics.trackers.track import TRACKER_MAP

        self.cfg = load_tracker_config(tracker)
        self.name = str(tracker)
        self._make = TRACKER_MAP[self.cfg.tracker_type]
        self._trackers: dict[str, object] = {}

    def assign(self, result) -> None:
        """Run the frame's tracker on `result`'s boxes and write the ids it gives into its detections."""
        from ultralytics.engine.results import Boxes

        if result.image is None:
            return
        key = result.path or ""
        if key not in self._trackers:
            self._trackers[key] = self._make(args=self.cfg)
        dets = result.detections
        data = torch.tensor([[*d.box, d.conf, d.cls] for d in dets], dtype=torch.float32).view(-1, 6)
        boxes = Boxes(data, result.image.shape[:2]).cpu().numpy()
        rows = self._trackers[key].update(boxes, result.image)
        for row in np.asarray(rows).reshape(-1, rows.shape[-1] if len(rows) else 8):
            index = int(row[-1])
            if 0 <= index < len(dets):
                dets[index].track_id = int(row[4])


def box_map(heatmap: np.ndarray, box, side: int = BOX_MAP_SIDE) -> np.ndarray:
    """The part of a full-resolution (H, W) map inside `box` (xyxy pixels), bilinearly resampled onto a
    `side` x `side` grid of box-normalised coordinates (cell centres), float32."""
    h, w = heatmap.shape
    x1, y1, x2, y2 = (float(v) for v in box)
    t = (torch.arange(side, dtype=torch.float32) + 0.5) / side
    xs, ys = x1 + t * (x2 - x1), y1 + t * (y2 - y1)  # the cell centres, in pixels (pixel i spans [i, i + 1))
    gx = xs / w * 2 - 1  # grid_sample, align_corners=False: -1 and 1 are the outer edges of the image
    gy = ys / h * 2 - 1
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], -1)[None]
    src = torch.from_numpy(np.ascontiguousarray(heatmap, np.float32))[None, None]
    out = torch.nn.functional.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out[0, 0].numpy()


def map_correlation(a: torch.Tensor, b: torch.Tensor) -> float | None:
    """Pearson correlation of two maps; None when either is constant (no structure to compare)."""
    a, b = a.flatten().double(), b.flatten().double()
    a, b = a - a.mean(), b - b.mean()
    den = (a.norm() * b.norm()).item()
    return None if den <= 1e-12 else float((a @ b).item() / den)


def box_iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass
class Track:
    """One track of one video: per observation its frame, box, class, confidence and box-normalised map."""

    track_id: int
    frames: list = field(default_factory=list)
    boxes: list = field(default_factory=list)
    classes: list = field(default_factory=list)
    scores: list = field(default_factory=list)
    maps: list = field(default_factory=list)
    thumbs: list = field(default_factory=list)  # (frame, BGR crop) of every `thumb_stride`-th observation
    thumb_stride: int = 1

    def wants_thumb(self) -> bool:
        """Whether the observation being added gets a crop in the strip (every `thumb_stride`-th one)."""
        return (len(self.frames) - 1) % self.thumb_stride == 0

    def add_thumb(self, frame: int, crop: np.ndarray) -> None:
        """Keep `crop`; past `STRIP_THUMBS` crops, every second one is dropped and the spacing doubles
        (memory stays bounded however long the track)."""
        self.thumbs.append((int(frame), crop))
        if len(self.thumbs) > STRIP_THUMBS:
            self.thumbs, self.thumb_stride = self.thumbs[::2], self.thumb_stride * 2

    def summary(self, names: dict) -> dict:
        """The track's row of tracks.csv: id, class (the most frequent), frames, mean confidence, stability."""
        cls = max(set(self.classes), key=self.classes.count)
        maps = torch.from_numpy(np.stack(self.maps).astype(np.float32))
        corr = [map_correlation(maps[k], maps[k + 1]) for k in range(len(maps) - 1)]
        corr = [c for c in corr if c is not None]
        ious = [box_iou(self.boxes[k], self.boxes[k + 1]) for k in range(len(self.boxes) - 1)]
        return {"track": self.track_id, "class": cls, "name": names.get(cls, str(cls)), "frames": len(self.frames),
                "first_frame": self.frames[0], "last_frame": self.frames[-1],
                "mean_conf": float(np.mean(self.scores)),
                "stability": float(np.mean(corr)) if corr else None,
                "mean_box_iou": float(np.mean(ious)) if ious else None}

    def arrays(self) -> dict[str, np.ndarray]:
        """The track's npz: maps (T, S, S) float16 in box-normalised coordinates, frames (T,), boxes (T, 4)
        float32 xyxy pixels, classes (T,) int32, scores (T,) float32."""
        return {"maps": np.stack(self.maps).astype(np.float16), "frames": np.asarray(self.frames, np.int64),
                "boxes": np.asarray(self.boxes, np.float32).reshape(-1, 4),
                "classes": np.asarray(self.classes, np.int32), "scores": np.asarray(self.scores, np.float32)}


class TrackLog:
    """The tracks of one video, filled frame by frame (`add`): a few KB per box, never the frames."""

    def __init__(self):
        self.tracks: dict[int, Track] = {}

    def add(self, frame: int, det, heatmap: np.ndarray, image: np.ndarray | None = None) -> None:
        """Record one tracked detection (`det.track_id` set) with its full-resolution map (and, given the frame
        `image`, a zoomed crop for the track's strip when its turn comes)."""
        track = self.tracks.setdefault(int(det.track_id), Track(int(det.track_id)))
        track.frames.append(int(frame))
        track.boxes.append([float(v) for v in det.box])
        track.classes.append(int(det.cls))
        track.scores.append(float(det.conf))
        track.maps.append(box_map(heatmap, det.box).astype(np.float16))  # 2 KB a box: long videos stay small
        if image is not None and track.wants_thumb():
            from .labels import class_colour
            from .render import box_crop

            # the box in its track's colour, as the annotated video draws it
            track.add_thumb(frame, box_crop(image, heatmap, det.box, None, size=THUMB_SIDE,
                                            colour=class_colour(det.track_id)))

    def rows(self, names: dict) -> list[dict]:
        return [self.tracks[k].summary(names) for k in sorted(self.tracks)]
