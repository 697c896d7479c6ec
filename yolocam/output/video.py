"""Writing explained videos and streams: per-frame folders, an annotated video, and per-track files.

    OUT/<stem>/frames/<frame:06d>/heatmaps.npz    each frame as an image folder (`export.py`), its manifest entry
    OUT/<stem>/frames/<frame:06d>/<k:03d>_<name>.jpg   with `frame` (its number in the source) and `source`
    OUT/<stem>.mp4                                the frames with every box's heat and box drawn (mp4v, OpenCV),
                                                  the heat as the overlays draw it (each box's 80 % / 50 % regions)
    OUT/<stem>/tracks.csv                         with tracking: one row per track (`tracks.py`)
    OUT/<stem>/tracks/<id:06d>.npz                with tracking: the track's maps in box coordinates
    OUT/<stem>/tracks/<id:06d>.<jpg|png>          with tracking: a strip of the track's crops (heat drawn)

The manifest's `videos` list has one entry per video or stream: `path`, `source`, `stem`, `video`,
`fps`, `vid_stride`, `frames` (written so far), `width`, `height`, `settings` (conf, iou, classes, max_det,
imgsz: what `--resume` checks), and with tracking `tracker` and `tracks`. A resumed run (`video_resume.py`)
keeps the frames an earlier run finished and writes the annotated video and the track files again.
The annotated video is written into a temporary folder inside the output folder (`.<stem>.mp4.tmp<pid>-<n>`)
and renamed to its final name when the source ends, when the run is interrupted (then it holds the frames
done), or fails; every other file is written by `atomic_write_bytes`.
"""

from __future__ import annotations

import csv
import io
import os
import threading
from pathlib import Path

import cv2
import numpy as np

from ..errors import YolocamError
from .export import ExportWriter
from .files import atomic_write_bytes, encode_npz
from .labels import class_colour, conf_text, draw_labelled_boxes
from .paths import checked_dir, inside
from .render import (HEAT_SHARE, OUTLINE_SHARE, SHOWN_ALPHA, blend_heatmap, draw_keypoints, draw_outline,
                     energy_levels, energy_scale)

VIDEO_SUFFIX = ".mp4"
VIDEO_FOURCC = "mp4v"
TRACK_COLUMNS = ("track", "class", "name", "frames", "first_frame", "last_frame", "mean_conf", "stability",
                 "mean_box_iou")


class AnnotatedVideo:
    """An mp4 (OpenCV `VideoWriter`, mp4v) at `out / rel`, written under a temporary folder in `out` and renamed
    into place by `close`; frames of another size than the first are resized to it."""

    def __init__(self, out: Path, rel: str, fps: float, size: tuple[int, int]):
        self.out, self.rel, self.size = Path(out), rel, (int(size[0]), int(size[1]))
        if inside(self.out, rel) is None:
            raise YolocamError(f"refusing to write {self.out / rel}: it is a symbolic link or leaves the output folder")
        self.tmp_dir = checked_dir(self.out, f".{rel}.tmp{os.getpid()}-{threading.get_ident()}")
        self.tmp = self.tmp_dir / Path(rel).name
        if os.path.lexists(self.tmp):
            os.unlink(self.tmp)
        fps = float(fps) if fps and 0 < fps < 1000 else 30.0
        self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*VIDEO_FOURCC), fps, self.size)
        if not self.writer.isOpened():
            self._remove_tmp()
            raise YolocamError(f"cannot write {self.out / rel}: OpenCV's VideoWriter has no {VIDEO_FOURCC} encoder "
                               "here (an opencv-python build with FFmpeg has one)")
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        if (frame.shape[1], frame.shape[0]) != self.size:
            frame = cv2.resize(frame, self.size, interpolation=cv2.INTER_AREA)
        self.writer.write(frame)
        self.frames += 1

    def close(self) -> None:
        """Finish the file and rename it to its final name (nothing is left when no frame was written)."""
        if self.writer is None:
            return
        self.writer.release()
        self.writer = None
        if self.frames and inside(self.out, self.rel) is not None and self.tmp.is_file():
            os.replace(self.tmp, self.out / self.rel)
        self._remove_tmp()

    def _remove_tmp(self) -> None:
        for path in (self.tmp,):
            if os.path.lexists(path):
                os.unlink(path)
        if self.tmp_dir.is_dir() and not self.tmp_dir.is_symlink():
            os.rmdir(self.tmp_dir)


def annotate_frame(result, maps: list[np.ndarray]) -> np.ndarray:
    """The frame with every box's heat drawn as the overlays draw it, each map on its own energy scale (the
    region holding 80 % of a box's heat coloured, 50 % outlined; the element-wise max over the boxes), every
    box drawn and labelled (`#track name conf` when tracked; one colour per track, else per class)."""
    image = result.image
    shown = np.zeros(image.shape[:2], np.float32)
    for m in maps:
        m = np.clip(m, 0.0, 1.0)  # signed maps: the positive part
        levels = energy_levels(m)
        if levels is not None:
            np.maximum(shown, energy_scale(m, levels), out=shown)
    out = blend_heatmap(image, shown, SHOWN_ALPHA, floor=1.0 - HEAT_SHARE)
    draw_outline(out, shown >= 1.0 - OUTLINE_SHARE)
    dets = result.detections
    labels = [(f"#{d.track_id} " if d.track_id is not None else "") + f"{d.name} {conf_text(d.conf)}" for d in dets]
    colours = [class_colour(d.track_id if d.track_id is not None else d.cls) for d in dets]
    draw_labelled_boxes(out, [d.box for d in dets], labels, colours, polygons=[getattr(d, "polygon", None) for d in dets])
    for d in dets:
        draw_keypoints(out, getattr(d, "keypoints", None))
    return out


def track_strip(track, row: dict) -> np.ndarray:
    """One picture of a track: its kept crops side by side (each with its frame number) under a title line
    (`#id name · n frames · stability s`)."""
    from .tracks import THUMB_SIDE
    from .labels import label_patch, paste

    side, cap = THUMB_SIDE, 18
    tiles = []
    for frame, crop in track.thumbs:
        tile = np.full((side + cap, side, 3), 32, np.uint8)
        h, w = crop.shape[:2]
        y, x = (side - h) // 2, (side - w) // 2
        tile[y:y + h, x:x + w] = crop[:side, :side]
        patch = label_patch(f"frame {frame}", 12, (32, 32, 32), (235, 235, 235))
        paste(tile, patch[:, : side - 4], 2, side + 1)
        tiles.append(tile)
    body = np.hstack(tiles) if tiles else np.full((side + cap, side, 3), 32, np.uint8)
    stability = "-" if row["stability"] is None else f"{row['stability']:.2f}"
    title = f"#{row['track']} {row['name']} · {row['frames']} frames · stability {stability}"
    head = np.full((24, body.shape[1], 3), 20, np.uint8)
    patch = label_patch(title, 14, (20, 20, 20), (240, 240, 240))
    paste(head, patch[:, : body.shape[1] - 4], 3, 3)
    return np.vstack([head, body])


def stored_maps(dets, size: tuple[int, int]) -> list[np.ndarray]:
    """Each box's map at `size` from the map as heatmaps.npz stores it (float16): what the annotated video and
    the track files are drawn from, so that a resumed run, which reads the kept frames back from their npz,
    draws them as the uninterrupted run did."""
    from .maps import MapStack

    half: dict[int, MapStack] = {}
    out = []
    for d in dets:
        ref = d.map_ref
        if ref is None:
            out.append(d.heatmap_at(size))
            continue
        stack = ref.stack
        if id(stack) not in half:
            half[id(stack)] = stack if stack.maps.dtype == np.float16 else \
                MapStack(stack.maps.astype(np.float16), stack.size, stack.region, signed=stack.signed)
        out.append(half[id(stack)].resized(ref.index, size))
    return out


class _Video:
    """One video's or stream's state while it is written."""

    def __init__(self, writer: "MediaExportWriter", result):
        from .tracks import TrackLog
        from ..inputs.streams import stem_hint

        self.writer, info = writer, writer.infos.get(result.path)
        earlier = writer.resume.records.get(result.path) if writer.resume is not None else None
        if earlier is not None:  # a resumed video keeps its stem (reserved by `begin_resume`)
            stem = earlier["stem"]
        else:
            hint = writer.stems_wanted.get(result.path) or stem_hint(result.path or "video")
            stem = writer.unique_stem(hint)
            k = 2
            while os.path.lexists(writer.out / f"{stem}{VIDEO_SUFFIX}"):  # never over a file that is not ours
                stem, k = writer.unique_stem(f"{hint}_{k}"), k + 1
        self.stem = stem
        self.rel = f"{stem}{VIDEO_SUFFIX}" if writer.annotate else None
        if self.rel:
            writer.add_file(self.rel)
        self.video: AnnotatedVideo | None = None
        self.tracks = TrackLog() if writer.tracker else None
        self.record = {"path": result.path, "source": result.source, "stem": stem, "video": self.rel,
                       "fps": round(float(info.fps), 3) if info else None,
                       "vid_stride": info.vid_stride if info else 1, "frames": 0,
                       "width": int(result.image.shape[1]), "height": int(result.image.shape[0])}
        if writer.tracker:
            self.record.update(tracker=writer.tracker, tracks=f"{stem}/tracks.csv")
        if writer.settings:  # what `--resume` must find the same to continue the video
            self.record["settings"] = dict(writer.settings)
        videos = writer.manifest["videos"]
        at = [k for k, v in enumerate(videos) if v is earlier]
        if at:  # in the earlier record's place
            videos[at[0]] = self.record
        else:
            videos.append(self.record)

    def add(self, result) -> None:
        h, w = result.image.shape[:2]
        maps = stored_maps(result.detections, (h, w))
        if self.rel:
            if self.video is None:
                self.video = AnnotatedVideo(self.writer.out, self.rel, self.record["fps"] or 30.0, (w, h))
            self.video.write(annotate_frame(result, maps))
        if self.tracks is not None:
            for d, m in zip(result.detections, maps):
                if d.track_id is not None:
                    self.tracks.add(result.frame, d, m, result.image)
        self.record["frames"] += 1

    def close(self) -> None:
        """Finish the annotated video; write the track files."""
        if self.video is not None:
            self.video.close()
            self.video = None
        if self.tracks is not None:
            self._write_tracks()
            self.tracks = None

    def _write_tracks(self) -> None:
        names = self.writer.names
        buf = io.StringIO()
        table = csv.DictWriter(buf, fieldnames=TRACK_COLUMNS, lineterminator="\n")
        table.writeheader()
        rows = self.tracks.rows(names)
        for row in rows:
            table.writerow({k: (f"{v:.4f}" if isinstance(v, float) else "" if v is None else v) for k, v in row.items()})
        self.writer.add_file(f"{self.stem}/tracks.csv")
        folder = checked_dir(self.writer.out, self.stem)
        atomic_write_bytes(folder / "tracks.csv", buf.getvalue().encode())
        if rows:
            tracks_dir = checked_dir(self.writer.out, f"{self.stem}/tracks")
            fmt = self.writer.save_format
            for row in rows:
                tid, track = row["track"], self.tracks.tracks[row["track"]]
                self.writer.add_file(f"{self.stem}/tracks/{tid:06d}.npz")
                atomic_write_bytes(tracks_dir / f"{tid:06d}.npz", encode_npz(**track.arrays()))
                self.writer.add_file(f"{self.stem}/tracks/{tid:06d}.{fmt}")
                atomic_write_bytes(tracks_dir / f"{tid:06d}.{fmt}", self.writer._encode(track_strip(track, row)))
        self.record["track_count"] = len(rows)
        if rows:  # the gallery shows each track's strip (`gallery._tracks_html`)
            fmt = self.writer.save_format
            self.record["strips"] = [{"track": r["track"], "name": r["name"], "frames": r["frames"],
                                      "picture": f"{self.stem}/tracks/{r['track']:06d}.{fmt}"} for r in rows]


class MediaExportWriter(ExportWriter):
    """`ExportWriter` for runs with videos and streams (images beside them are written as usual).

    `infos`: frame path -> `MediaInfo` (fps, stride) from the opened sources; `annotate`: write the annotated
    video; `tracker`: the tracker's name when the run tracks (tracks.csv and the tracks' npz are written);
    `names`: class names (tracks.csv); `stems`: frame path -> the name to give its files (default: the
    video's own stem)."""

    def __init__(self, out_dir, infos: dict | None = None, annotate: bool = True, tracker: str | None = None,
                 names: dict | None = None, stems: dict | None = None, **kwargs):
        super().__init__(out_dir, **kwargs)
        self.stems_wanted = dict(stems or {})
        self.infos = infos if infos is not None else {}
        self.annotate, self.tracker, self.names = annotate, tracker, dict(names or {})
        if not isinstance(self.manifest.get("videos"), list):
            self.manifest["videos"] = []
        self._videos: dict[str, _Video] = {}
        self.settings: dict = {}  # conf, iou, classes, max_det, imgsz: recorded per video (`explain/video.py`)
        self.resume = None  # a `VideoResume` (`begin_resume`)
        self._order: dict[int, int] = {}  # id(entry) -> its place in the source (a resumed run lists them so)

    def begin_resume(self, plan) -> None:
        """Continue an earlier run (`video_resume.py`): its kept frames are listed from the first manifest on
        (every file in the folder stays listed, whenever the run stops), its video records and stems kept."""
        self.resume = plan
        self.manifest["images"] = list(plan.entries)
        self.manifest["videos"] = list(plan.records.values())
        self._image_json = []
        for rel in [e["stem"] for e in plan.entries] + [r["stem"] for r in plan.records.values()]:
            self.stems.add(rel.casefold())

    def add(self, result) -> dict | None:
        from .video_resume import ResumedFrame

        if isinstance(result, ResumedFrame):  # finished by the earlier run: drawn, not written again
            entry = result.entry
            for det, d in zip(entry["detections"], result.detections):  # the tracker, run again, gave these ids
                if det.get("track") != d.track_id:
                    det.pop("track", None) if d.track_id is None else det.update(track=int(d.track_id))
                    self._image_json = []  # serialised afresh
            self._video(result).add(result)
        else:
            entry = super().add(result)
        if entry is not None:
            self._order[id(entry)] = len(self._order)
        return entry

    def _source_order(self) -> None:
        """A resumed run's entries in the order of the source (kept frames were listed first)."""
        if self.resume is None:
            return
        images = self.manifest["images"]
        rank = sorted(range(len(images)), key=lambda i: (0, self._order[id(images[i])]) if id(images[i]) in
                      self._order else (1, i))
        if rank != list(range(len(images))):
            self.set_entries([images[i] for i in rank], self.manifest["errors"])

    def _video(self, result) -> _Video:
        key = result.path or ""
        if key not in self._videos:
            self._videos[key] = _Video(self, result)
        return self._videos[key]

    def stem_for(self, result) -> str:
        if getattr(result, "frame", None) is None:
            return super().stem_for(result)
        return f"{self._video(result).stem}/frames/{int(result.frame):06d}"

    def write_files(self, result, stem: str) -> dict:
        entry = super().write_files(result, stem)
        if getattr(result, "frame", None) is not None:
            entry["frame"], entry["source"] = int(result.frame), result.source
            self._video(result).add(result)
        return entry

    def close_videos(self) -> None:
        """Finish every annotated video and write the track files (idempotent)."""
        videos, self._videos = list(self._videos.values()), {}
        for video in videos:
            video.close()

    def finish(self) -> None:
        self.close_videos()
        self._source_order()
        super().finish()

    def fail(self) -> None:
        self.close_videos()  # an interrupted run keeps a playable video of the frames done
        self._source_order()
        super().fail()
