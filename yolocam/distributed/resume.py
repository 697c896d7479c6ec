"""Resuming a run: what an earlier run's manifest in the output folder may keep (a distributed run's images;
a video run's first frames of each video, `plan_video_resume` at the end).

Stems follow paths: an image the earlier manifest recorded keeps its stem (an image added since, say
`A.png` beside `a.png`, gets a new one), so a kept image's files stay where its entry says. An entry
is kept only when it has the shape `ExportWriter.write_files` gives (every detection with its box,
class, name, confidence, anchor, level and overlay under the image's stem) and all its files exist;
a malformed or unfinished entry of an image in this run is explained again, its old files removed
first. A finished entry of an image no longer in the source stays listed (a resume never loses
finished work); an unusable one of such an image has its files removed. So every file the earlier
manifest listed ends up listed again or removed, never left unlisted.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..output.export import OWN_FILES
from ..output.files import safe_name
from ..output.paths import inside


@dataclass
class ResumePlan:
    """stems: one per source image; done: {source index: kept entry}; extras: kept entries of images not in
    this source (listed after the source's); drop: the files of the entries not kept, to remove."""

    stems: list[str]
    done: dict = field(default_factory=dict)
    extras: list = field(default_factory=list)
    drop: list = field(default_factory=list)


def entry_files(entry) -> list[str]:
    """The files an image entry lists (heatmaps, overlays, crops)."""
    if not isinstance(entry, dict):
        return []
    rels = [entry.get("heatmaps")]
    dets = entry.get("detections") if isinstance(entry.get("detections"), list) else []
    for det in dets:
        if isinstance(det, dict):
            rels += [det.get("overlay"), det.get("crop")]
    return [r for r in rels if isinstance(r, str)]


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _numbers(v, n: int | None = None) -> bool:
    return (isinstance(v, list) and (n is None or len(v) == n)
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v))


def valid_detection(det, k: int, stem: str, crops: bool, save_format: str) -> bool:
    """A detection entry as `write_files` writes it: index k, box, cls, name, conf, anchor, level, the overlay
    (and with `crops`, the crop) under `stem`."""
    if not isinstance(det, dict) or det.get("index") != k or not _numbers(det.get("box"), 4):
        return False
    if not (_int(det.get("cls")) and isinstance(det.get("name"), str) and _numbers([det.get("conf")])
            and _int(det.get("anchor")) and _int(det.get("level"))):
        return False
    overlay = det.get("overlay")
    if not isinstance(overlay, str) or not overlay.endswith("." + save_format) or \
            os.path.dirname(overlay) != stem:
        return False
    if crops != ("crop" in det):
        return False
    if crops and (not isinstance(det["crop"], str) or os.path.dirname(det["crop"]) != f"{stem}/crops"):
        return False
    return all(_numbers(det[key], n) for key, n in (("rbox", 5),) if key in det) and \
        all(isinstance(det[key], list) for key in ("polygon", "keypoints", "segments") if key in det)


def valid_entry(entry, path, stem: str, crops: bool, save_format: str) -> bool:
    """An image entry of `path` under `stem`, shaped as `write_files` writes it."""
    if not isinstance(entry, dict) or entry.get("path") != path or entry.get("stem") != stem:
        return False
    if not isinstance(path, (str, type(None))):
        return False
    if entry.get("heatmaps") != f"{stem}/heatmaps.npz" or not isinstance(entry.get("detections"), list):
        return False
    if not all(_int(entry.get(k)) and entry[k] > 0 for k in ("width", "height")):
        return False
    return all(valid_detection(d, k, stem, crops, save_format) for k, d in enumerate(entry["detections"]))


def files_present(out: Path, entry) -> bool:
    """Every file the entry lists is a plain file inside `out` (no link on the way)."""
    for rel in entry_files(entry):
        path = inside(out, rel)
        if path is None or path.is_symlink() or not path.is_file():
            return False
    return True


def usable_stem(out: Path, stem) -> bool:
    """A stem an earlier run may have made: one safe name, not one of the folder's own files, and on disk
    nothing or a real folder inside `out`."""
    if not isinstance(stem, str) or not stem or safe_name(stem) != stem:
        return False
    if stem.casefold() in {n.casefold() for n in OWN_FILES}:
        return False
    path = inside(out, stem)
    return path is not None and (not os.path.lexists(path) or (path.is_dir() and not path.is_symlink()))


def plan_resume(writer, old, entries: list[str], crops: bool, save_format: str) -> ResumePlan:
    """Stems for `entries` (the earlier run's where it recorded the path, else `writer.unique_stem`; reserved in
    `writer`), the entries kept, and the files of the others (see the module docstring)."""
    out = writer.out
    images = old.get("images") if isinstance(old, dict) and isinstance(old.get("images"), list) else []
    index = {p: i for i, p in enumerate(entries)}
    stems: dict[int, str] = {}
    done, extras, kept_ids = {}, [], set()

    def reserve(stem: str) -> bool:
        if not usable_stem(out, stem) or stem.casefold() in writer.stems:
            return False
        writer.stems.add(stem.casefold())
        return True

    for entry in images:  # first the images of this source the earlier run recorded: their stems
        i = index.get(entry.get("path")) if isinstance(entry, dict) and isinstance(entry.get("path"), str) else None
        if i is None or i in stems or not reserve(entry.get("stem")):
            continue
        stems[i] = entry["stem"]
        if valid_entry(entry, entries[i], stems[i], crops, save_format) and files_present(out, entry):
            done[i] = entry
            kept_ids.add(id(entry))
    for entry in images:  # then finished images no longer in the source: kept, listed after the others
        if (isinstance(entry, dict) and entry.get("path") not in index and id(entry) not in kept_ids
                and valid_entry(entry, entry.get("path"), entry.get("stem"), crops, save_format)
                and files_present(out, entry) and reserve(entry["stem"])):
            extras.append(entry)
            kept_ids.add(id(entry))
    names = [stems[i] if i in stems else writer.unique_stem(p) for i, p in enumerate(entries)]
    keep = {rel for e in images if id(e) in kept_ids for rel in entry_files(e)}
    drop = [rel for e in images if id(e) not in kept_ids for rel in entry_files(e)]
    if isinstance(old, dict) and isinstance(old.get("pending"), list):
        drop += [r for r in old["pending"] if isinstance(r, str)]
    return ResumePlan(names, done, extras, [r for r in drop if r not in keep])


# --------------------------------------------------------------------------- videos (`explain --resume`)
RUN_KEYS = ("model", "method", "target", "layers", "signed")


def plan_video_resume(out: Path, old, infos: dict, meta: dict, settings: dict, tracker: str | None, crops: bool,
                      save_format: str):
    """What a video run continues from the earlier run's manifest `old` in `out` (`output/video_resume.py`).

    For each video file of this run (`infos`: path -> `MediaInfo`, kind "video") that the earlier run recorded:
    its entries of the first frames in order (stride-1, 2*stride-1, ...; as ultralytics' loader numbers them),
    each shaped as `write_files` writes it under `<stem>/frames/<frame:06d>` and with its files present, up to
    the first that is not. A video with frames recorded needs the same vid_stride, tracker and settings (conf,
    iou, classes, max_det, imgsz), and kept frames the same model, method, target and layers, else one
    `YolocamError`. Everything else the earlier manifest lists (images, frames not kept, annotated videos,
    track files, the gallery) is to be removed (`drop`): written again by this run."""
    from ..errors import YolocamError
    from ..output.cleanup import listed_files
    from ..output.video_resume import VideoResume

    plan = VideoResume(Path(out))
    if not isinstance(old, dict) or not isinstance(old.get("images"), list):
        return plan
    records = [r for r in old.get("videos") or [] if isinstance(r, dict) and isinstance(r.get("path"), str)]
    frames: dict[str, list] = {}
    for entry in old["images"]:
        if isinstance(entry, dict) and _int(entry.get("frame")) and isinstance(entry.get("path"), str):
            frames.setdefault(entry["path"], []).append(entry)
    for record in records:
        path, info, stem = record["path"], infos.get(record["path"]), record.get("stem")
        if info is None or info.kind != "video" or path in plan.records or not usable_stem(out, stem):
            continue
        if frames.get(path):  # frames of another vid_stride, tracker or settings would not continue these
            _same_video(record, path, info.vid_stride, tracker, settings)
        kept = {}
        stride = info.vid_stride
        for k, entry in enumerate(sorted(frames.get(path, []), key=lambda e: e["frame"])):
            frame = (k + 1) * stride - 1
            if (entry["frame"] != frame or not valid_entry(entry, path, f"{stem}/frames/{frame:06d}", crops, save_format)
                    or not all(_int(d.get("track", 0)) for d in entry["detections"]) or not files_present(out, entry)):
                break
            kept[frame] = entry
        if not kept:
            continue
        plan.kept[path], plan.records[path] = kept, record
    if plan.kept:
        diff = [k for k in RUN_KEYS if old.get(k, False if k == "signed" else None) != meta.get(k, False if k == "signed"
                                                                                             else None)]
        if diff:
            raise YolocamError(f"cannot resume: the output folder was written with another {', '.join(diff)} "
                               f"({', '.join(f'{k}={old.get(k)!r}' for k in diff)}); pass the same options, or rerun "
                               "without --resume")
    ids = {id(e) for kept in plan.kept.values() for e in kept.values()}
    plan.entries = [e for e in old["images"] if id(e) in ids]
    keep = {rel for e in plan.entries for rel in entry_files(e)}
    plan.drop = [rel for rel in listed_files(old) if rel not in keep and rel != "manifest.json"]
    return plan


def _same_video(record: dict, path: str, stride: int, tracker: str | None, settings: dict) -> None:
    """A kept video's earlier record must have the vid_stride, tracker and settings of this run."""
    from ..errors import YolocamError

    theirs = {"vid_stride": record.get("vid_stride"), "tracker": record.get("tracker"), **(record.get("settings") or {})}
    ours = {"vid_stride": stride, "tracker": tracker, **settings}
    diff = [k for k in ours if theirs.get(k) != ours[k]]
    if diff:
        raise YolocamError(f"cannot resume {path}: the earlier run used "
                           f"{', '.join(f'{k}={theirs.get(k)!r}' for k in diff)}, this one "
                           f"{', '.join(f'{k}={ours[k]!r}' for k in diff)}; pass the same options, or rerun "
                           "without --resume")
