"""The README's frame strip: a generated clip explained with tracks, each track's crops over the frames with their heat.

    python examples/video_strip.py [--out examples/images/video_strip.jpg] [--frames 48] [--seed 0]

The clip is `yolocam demo --video`'s (moving, rotating, overlapping shapes, `yolocam.demo.clips`), explained
by the default method with ultralytics' ByteTrack (`Explainer.explain(..., track=True, stream=True)`, needs
lap). Top row: four annotated frames as the annotated video draws them; below, one row per class: the
longest track of it, eight of its frames evenly spaced, each crop (box plus context) with the heat drawn as
everywhere in yolocam (the region holding 80 % of the box's heat coloured, 50 % outlined), with its track's
stability (mean correlation of consecutive maps in box coordinates, `tracks.csv`).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import cv2
import numpy as np

TILE = 128  # crop side
PER_ROW = 8  # crops per track
BACKGROUND = (24, 24, 24)


def caption(width: int, text: str, size: int = 14, height: int = 22) -> np.ndarray:
    from yolocam.output.labels import label_patch, paste

    strip = np.full((height, width, 3), BACKGROUND, np.uint8)
    patch = label_patch(text, size, BACKGROUND, (235, 235, 235))
    paste(strip, patch[:, : width - 4], 3, max((height - patch.shape[0]) // 2, 0))
    return strip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="examples/images/video_strip.jpg")
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default="demo-v8")
    args = ap.parse_args()

    import yolocam
    from yolocam.demo.clips import CLIP_FPS, CLIP_SIZE, make_clip
    from yolocam.output.labels import class_colour
    from yolocam.output.render import box_crop, heat_legend
    from yolocam.output.tracks import TrackLog
    from yolocam.output.video import annotate_frame, stored_maps

    with tempfile.TemporaryDirectory() as tmp:
        clip = str(Path(tmp) / "shapes.mp4")
        writer = cv2.VideoWriter(clip, cv2.VideoWriter_fourcc(*"mp4v"), CLIP_FPS, (CLIP_SIZE[1], CLIP_SIZE[0]))
        for frame in make_clip(args.seed, frames=args.frames):
            writer.write(frame)
        writer.release()
        exp = yolocam.Explainer(args.model)
        shown_frames = set(np.linspace(0, args.frames - 1, 4).round().astype(int).tolist())
        crops: dict[int, list] = {}
        annotated, log = [], TrackLog()
        for r in exp.explain(clip, track=True, stream=True):
            maps = stored_maps(r.detections, r.image.shape[:2])
            if r.frame in shown_frames:
                annotated.append((r.frame, annotate_frame(r, maps)))
            for d, m in zip(r.detections, maps):
                if d.track_id is None:
                    continue
                log.add(r.frame, d, m)
                crop = box_crop(r.image, m, d.box, None, size=TILE, colour=class_colour(d.track_id))
                crops.setdefault(d.track_id, []).append((r.frame, crop, d.conf))
    rows = {row["track"]: row for row in log.rows(exp.names)}
    best: dict[int, dict] = {}  # the longest track of each class
    for row in rows.values():
        if row["class"] not in best or row["frames"] > best[row["class"]]["frames"]:
            best[row["class"]] = row
    width = PER_ROW * TILE
    parts = [caption(width, f"{args.frames} frames of moving shapes, {args.model}, {exp.meta['method']}, "
                            "ByteTrack: four frames as the annotated video draws them", 15, 26)]
    side = width // 4
    parts.append(np.hstack([np.vstack([cv2.resize(a, (side, side), interpolation=cv2.INTER_AREA),
                                       caption(side, f"frame {f}", 12, 18)]) for f, a in sorted(annotated)]))
    for cls in sorted(best):
        row = best[cls]
        seen = crops[row["track"]]
        picks = np.linspace(0, len(seen) - 1, min(PER_ROW, len(seen))).round().astype(int)
        tiles = []
        for k in picks:
            frame, crop, conf = seen[k]
            tile = np.full((TILE, TILE, 3), BACKGROUND, np.uint8)
            h, w = crop.shape[:2]
            tile[(TILE - h) // 2:(TILE - h) // 2 + h, (TILE - w) // 2:(TILE - w) // 2 + w] = crop
            tiles.append(np.vstack([tile, caption(TILE, f"frame {frame}  {conf:.2f}", 12, 18)]))
        body = np.hstack(tiles + [np.full((TILE + 18, width - TILE * len(tiles), 3), BACKGROUND, np.uint8)])
        stability = "-" if row["stability"] is None else f"{row['stability']:.2f}"
        box_iou = "-" if row["mean_box_iou"] is None else f"{row['mean_box_iou']:.2f}"
        parts.append(caption(width, f"track #{row['track']} {row['name']}: {row['frames']} frames, stability "
                                    f"{stability} (consecutive boxes' IoU {box_iou})", 14, 24))
        parts.append(body)
    parts.append(heat_legend(width, 26, background=BACKGROUND))
    picture = np.vstack([np.pad(p, ((0, 2), (0, 0), (0, 0))) for p in parts])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(args.out, picture, [cv2.IMWRITE_JPEG_QUALITY, 88])
    print(f"wrote {args.out} ({picture.shape[1]}x{picture.shape[0]}); tracks:")
    for row in rows.values():
        print(f"  #{row['track']} {row['name']}: {row['frames']} frames, stability {row['stability']}, "
              f"mean box IoU {row['mean_box_iou']}")


if __name__ == "__main__":
    main()
