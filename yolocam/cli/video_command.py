"""`yolocam explain` for videos, streams, webcams, the screen, URLs and source lists (`explain/video.py`).

`cmd_explain` hands a run over here when any SOURCE is not an image file, folder or glob; the image
sources beside them are explained as usual, into the same folder. Nothing here imports torch until the
run starts (`--help` stays fast).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import YolocamError
from .terminal import printable


def add_video_args(p) -> None:
    """The explain command's options for videos and streams (names as ultralytics' predict arguments)."""
    from .options import positive_int

    p.add_argument("--vid-stride", type=positive_int, default=1,
                   help="videos and streams: explain every n-th frame (default 1: every frame)")
    p.add_argument("--stream-buffer", action="store_true",
                   help="live streams and webcams: explain every frame, falling behind if need be (default: the "
                        "latest frame, as ultralytics)")
    p.add_argument("--track", action="store_true",
                   help="videos and streams: give boxes track ids with ultralytics' tracker; writes "
                        "<stem>/tracks.csv (needs the package lap)")
    p.add_argument("--tracker", default="bytetrack.yaml",
                   help="with --track: bytetrack.yaml (default), botsort.yaml, or a tracker YAML file")
    p.add_argument("--no-video", dest="annotate", action="store_false",
                   help="do not write the annotated video OUT/<stem>.mp4")


def media_sources(sources) -> bool:
    """True when a SOURCE is a video, URL, stream, webcam, `screen` or a .txt/.streams list."""
    from ..inputs.streams import has_media

    return has_media(list(sources))


def cmd_explain_media(args) -> int:
    from ..inputs.streams import media_kind
    from .options import resolve_inputs
    from .out_folder import out_dir, owned

    if args.ray is not None:
        raise YolocamError("--ray explains image files; videos, streams, webcams and URLs are explained in one "
                           "process (drop --ray)")
    for src in args.source:  # the image sources among them: a missing path is the same one line as before
        kind = media_kind(src)
        if kind is None:
            resolve_inputs([src], recursive=args.recursive)
        elif kind == "video" and not os.path.isfile(src):  # as inputs/streams.py says it, before torch loads
            raise YolocamError(f"video not found: {src}" if not os.path.lexists(src) else f"not a file: {src}")
    reuse_ok = args.exist_ok or args.resume  # --resume continues the videos of an earlier run in --out
    out, existed = out_dir(args.out, "explain", reuse_ok)
    with owned(out, existed, reuse_ok):
        return _explain_media_into(args, out, existed)


def _explain_media_into(args, out: Path, existed: bool) -> int:
    from .options import preflight

    preflight(args)  # a missing --model file or device is answered before torch loads
    from . import notes
    from ..explain.video import Sources, check_vid_stride, export_source
    from ..output.cleanup import read_manifest
    from ..output.video import MediaExportWriter
    from .options import explainer_from_args
    from .out_folder import reuse

    check_vid_stride(args.vid_stride)
    earlier = read_manifest(out) if args.resume else None  # before anything in `out` changes
    if args.track:
        from ..output.tracks import load_tracker_config

        load_tracker_config(args.tracker)  # before anything is opened or loaded
    crops = args.html if args.crops is None else args.crops
    writer = MediaExportWriter(out, html=args.html, crops=crops, append=False, save_format=args.save_format,
                               tracker=args.tracker if args.track else None, annotate=args.annotate)
    # opened before the model loads: a missing webcam or an unreachable stream is answered at once
    sources = Sources(list(args.source), vid_stride=args.vid_stride, buffer=args.stream_buffer, out_dir=out,
                      recursive=args.recursive)
    try:
        exp, classes = explainer_from_args(args)
        args.conf, args.max_det = exp.thresholds(args.conf, args.max_det)
        plan = _resume(args, exp, classes, sources, writer, earlier) if args.resume else reuse(out, existed)
        writer.manifest.update(exp.meta)
        writer.names = dict(exp.names)
        counts = export_source(exp, None, out, args.conf, args.iou, classes, args.max_det, args.batch,
                               vid_stride=args.vid_stride, track=args.track, tracker=args.tracker,
                               progress=None, writer=writer, sources=sources, resume=plan)
    finally:
        sources.close()
    notes.warn_skipped(counts, out)
    n_err = counts["errors"]
    done = [f"{counts['images']} images"] if counts["images"] else []
    done += [f"{counts['frames']} frames"] if counts["frames"] or not counts["images"] else []
    done[-1] += f" ({counts['resumed']} kept from the earlier run)" if counts.get("resumed") else ""
    videos = [v["video"] for v in writer.manifest.get("videos", []) if v.get("video") and (out / v["video"]).is_file()]
    print(f"yolocam: {', '.join(done)}, {counts['detections']} detections, {n_err} error{'s' if n_err != 1 else ''} "
          f"-> {printable(out)}" + (f" (video: {printable(', '.join(str(out / v) for v in videos))})" if videos else "")
          + (f" (gallery: {printable(out / 'index.html')})" if args.html else ""))
    if (counts["images"] or counts["frames"]) and not counts["detections"]:
        notes.note(notes.nothing_found_hint(args.model, args.conf, classes, exp.names))
    if counts["images"] + counts["frames"] == 0:
        raise YolocamError(f"nothing could be explained ({n_err} unusable input{'s' if n_err != 1 else ''})")
    return 0


def _resume(args, exp, classes, sources, writer, earlier):
    """--resume: keep the frames the earlier run in --out finished (`distributed/resume.py`), remove the rest of
    what it wrote, and start the writer from them; says what is kept."""
    from . import notes
    from ..distributed.resume import plan_video_resume
    from ..explain.video import run_settings
    from ..output.cleanup import remove_listed, remove_temp_files

    crops = args.html if args.crops is None else args.crops
    plan = plan_video_resume(writer.out, earlier, sources.infos, exp.meta,
                             run_settings(exp, args.conf, args.iou, classes, args.max_det),
                             args.tracker if args.track else None, crops, args.save_format)
    remove_listed(writer.out, plan.drop)
    remove_temp_files(writer.out)
    writer.begin_resume(plan)
    for path, kept in plan.kept.items():
        notes.note(f"resuming {path}: {len(kept)} frame{'s' if len(kept) != 1 else ''} done by the earlier run kept")
    if not plan.kept:
        notes.note(f"--resume: no finished video frames in {writer.out} to continue from; starting afresh")
    return plan


# --------------------------------------------------------------------------- yolocam demo --video
def add_demo_video_args(p) -> None:
    from .options import positive_int

    p.add_argument("--video", action="store_true",
                   help="explain a generated clip of moving, rotating and overlapping shapes instead, with tracks: "
                        "writes the clip (source.mp4), the annotated shapes.mp4, tracks.csv and the gallery")
    p.add_argument("--frames", type=positive_int, default=48, help="--video: frames in the clip (default 48)")


def cmd_demo_video(args) -> int:
    from .out_folder import out_dir, owned

    out, existed = out_dir(args.out, "demo", args.exist_ok)
    with owned(out, existed, args.exist_ok):
        return _demo_video_into(args, out, existed)


def _demo_video_into(args, out: Path, existed: bool) -> int:
    import importlib.util

    from . import notes
    from ..demo.clips import CLIP_FPS, CLIP_SIZE, make_clip
    from ..explain.explainer import Explainer
    from ..explain.video import export_source
    from ..output.video import AnnotatedVideo, MediaExportWriter
    from .options import drise_options
    from .out_folder import reuse

    track = importlib.util.find_spec("lap") is not None
    if not track:
        notes.note("tracking needs the Python package 'lap' (pip install lap): the clip is explained without tracks")
    source = out / "source.mp4"
    writer = MediaExportWriter(out, html=True, crops=True, append=False, save_format=args.save_format,
                               tracker="bytetrack.yaml" if track else None, stems={str(source): "shapes"})
    exp = Explainer(model=args.model, method=args.method, target=args.target, layers=args.layers,
                    fuse=args.fuse, imgsz=args.imgsz, device=args.device, **drise_options(args))
    if exp.adapter.task == "classify":
        raise YolocamError(f"demo --video tracks boxes, which the classification model {args.model} does not "
                           "predict; expected a detector (demo-v8, demo-26, demo-seg, demo-pose, demo-obb)")
    reuse(out, existed)
    args.conf, args.max_det = exp.thresholds(args.conf, args.max_det)
    writer.manifest.update(exp.meta)
    writer.names = dict(exp.names)
    writer.add_file("source.mp4")
    clip = AnnotatedVideo(out, "source.mp4", CLIP_FPS, (CLIP_SIZE[1], CLIP_SIZE[0]))
    try:
        for frame in make_clip(args.seed, frames=args.frames):
            clip.write(frame)
    finally:
        clip.close()
    counts = export_source(exp, str(source), out, args.conf, 0.7, None, args.max_det, track=track,
                           progress=None, writer=writer)
    [video] = writer.manifest["videos"]
    print(printable(f"yolocam demo --video: {counts['frames']} frames of moving shapes (seed {args.seed}), model "
                    f"{exp.meta['model']}, method {exp.meta['method']}: {counts['detections']} detections"
                    + (f" in {video.get('track_count', 0)} tracks" if track else "")))
    print(f"  video:    {printable(out / video['video'])}")
    if track:
        print(f"  tracks:   {printable(out / video['tracks'])}")
    print(f"  gallery:  {printable(out / 'index.html')}")
    print(f"  manifest: {printable(out / 'manifest.json')}")
    return 0
