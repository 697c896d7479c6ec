"""Memory and throughput over a long video: resident memory at frames 1, 250, 500, 1000 of an explained clip.

    python examples/video_memory.py [--frames 1000] [--track] [--model demo-v8] [--device cpu] [--out DIR]

A clip of moving shapes (`yolocam.demo.clips`, 320 x 320, `--frames` frames) is generated in a child process
(the generator holds all frames in memory: kept out of the measured process) and written as an mp4, then
explained with the default method into an output folder as `yolocam explain clip.mp4` does (per-frame maps
and overlays, the annotated video; `--track`: tracks.csv, the tracks' maps and strips). Resident memory
(VmRSS, and the peak VmHWM, from /proc/self/status: Linux) is read after the given frames are written; the
frames per second count the explained frames only (model load and clip generation excluded).
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import time
from pathlib import Path

CHECKPOINTS = (1, 250, 500, 1000)


def status_mb(key: str) -> float:
    """A /proc/self/status memory line (VmRSS, VmHWM) in MB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {key} in /proc/self/status (Linux only)")


def write_clip(path: str, frames: int, seed: int) -> None:
    import cv2

    from yolocam.demo.clips import CLIP_FPS, CLIP_SIZE, make_clip

    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), CLIP_FPS, (CLIP_SIZE[1], CLIP_SIZE[0]))
    for frame in make_clip(seed, frames=frames):
        writer.write(frame)
    writer.release()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=1000)
    ap.add_argument("--model", default="demo-v8")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--track", action="store_true", help="also track (needs lap)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="output folder (default: a temporary one, removed after)")
    args = ap.parse_args()

    tmp = tempfile.TemporaryDirectory(prefix="yolocam-video-memory-")
    clip = str(Path(tmp.name) / "clip.mp4")
    child = multiprocessing.get_context("spawn").Process(target=write_clip, args=(clip, args.frames, args.seed))
    child.start()
    child.join()
    if child.exitcode != 0:
        raise SystemExit("generating the clip failed")

    import torch

    import yolocam
    from yolocam.explain.video import export_source

    exp = yolocam.Explainer(args.model, imgsz=args.imgsz, device=args.device)
    out = Path(args.out) if args.out else Path(tmp.name) / "out"
    marks = [c for c in CHECKPOINTS if c <= args.frames] + ([args.frames] if args.frames not in CHECKPOINTS else [])
    rows, state = [], {"n": 0, "t0": None, "dets": 0}

    def on_result(result, entry) -> None:
        state["n"] += 1
        state["dets"] += len(entry["detections"]) if entry else 0
        if state["n"] == 1:
            state["t0"] = time.perf_counter()  # after the first frame: the model's warm-up excluded
        if state["n"] in marks:
            rows.append((state["n"], status_mb("VmRSS"), status_mb("VmHWM"), time.perf_counter() - state["t0"]))

    rss0 = status_mb("VmRSS")
    export_source(exp, clip, out, track=args.track, save_format="jpg", on_result=on_result)
    method = exp.meta["method"]
    print(f"{args.frames} frames of {clip} (320x320), model {args.model}, method {method}, imgsz {args.imgsz}, "
          f"device {args.device}, torch threads {torch.get_num_threads()}, track {args.track}: "
          f"{state['dets']} detections; RSS before the first frame {rss0:.0f} MB")
    print("| frame | RSS (MB) | peak RSS (MB) | frames/s since frame 1 |")
    print("|---:|---:|---:|---:|")
    for n, rss, hwm, seconds in rows:
        fps = "" if n == 1 else f"{(n - 1) / seconds:.2f}"
        print(f"| {n} | {rss:.0f} | {hwm:.0f} | {fps} |")
    tmp.cleanup()


if __name__ == "__main__":
    main()
