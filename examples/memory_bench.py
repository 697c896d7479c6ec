"""Peak memory and bytes written by `yolocam explain` on large images, before and after a change.

    python examples/memory_bench.py                      # this checkout only
    python examples/memory_bench.py --before 29e47c1     # also the tree of a git revision, and map differences

Cases (built offline from the package's generated scenes, explained with the bundled demo-v8):

  12mp  4000x3000, 4x3 tiles of 1000x1000 upscaled scenes, --imgsz 1280, 56 boxes
  36mp  6000x6000, one upscaled scene, --imgsz 640, 7 boxes

A full-size PNG overlay of the 12mp image takes about 10.7 MB, as the 4000x3000 photo that
prompted this did (575 MB for 56 overlays); `--grain SIGMA` adds per-pixel Gaussian noise at full
resolution for a harder case (sigma 4: 16.6 MB per full-size overlay).

Each run is the real CLI in a fresh process; its peak RSS is that process's VmHWM as it exits. Bytes written: every file under `--out` afterwards. With `--before REV` the
same cases also run on `git archive REV` (imported from a temporary folder), and every box's map
written by the two runs is compared (read back with this checkout's `load_output`).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
CASES = {  # name: (height, width, tiles (rows, cols), imgsz, boxes)
    "12mp": (3000, 4000, (3, 4), 1280, 56),
    "36mp": (6000, 6000, (1, 1), 640, 7),
}


def build_image(name: str, path: Path, grain: float) -> None:
    from yolocam.demo.scenes import make_scene

    h, w, (rows, cols), _, _ = CASES[name]
    th, tw = h // rows, w // cols
    image = np.zeros((h, w, 3), np.uint8)
    for k in range(rows * cols):
        r, c = divmod(k, cols)
        scene = make_scene(100 + k, size=(352, 352) if rows * cols > 1 else (640, 640)).image
        image[r * th:(r + 1) * th, c * tw:(c + 1) * tw] = cv2.resize(scene, (tw, th), interpolation=cv2.INTER_LINEAR)
    if grain > 0:
        rng = np.random.default_rng(0)
        for y in range(0, h, 500):  # in strips: the noise of a whole 36 MP image would be 0.9 GB of float64
            strip = image[y:y + 500].astype(np.float32) + rng.normal(0, grain, image[y:y + 500].shape)
            image[y:y + 500] = np.clip(np.round(strip), 0, 255).astype(np.uint8)
    cv2.imwrite(str(path), image)


def run_cli(tree: Path, image: Path, out: Path, imgsz: int, boxes: int, extra: list[str]) -> dict:
    """One `yolocam explain` in a fresh process importing yolocam from `tree`; peak RSS and bytes written."""
    # The peak is the child's own VmHWM, read as it exits: `ru_maxrss` would also count the parent's
    # pages at the fork (this process grows when it compares the maps of a previous case).
    code = ("import atexit, sys; sys.path.insert(0, sys.argv[1]); import yolocam; "
            "assert yolocam.__file__.startswith(sys.argv[1]), yolocam.__file__; "
            "atexit.register(lambda: print('VmHWM', [l.split()[1] for l in open('/proc/self/status') "
            "if l.startswith('VmHWM')][0], file=sys.stderr)); "
            "from yolocam.cli.main import main; sys.exit(main(sys.argv[2:]))")
    argv = [sys.executable, "-c", code, str(tree), "explain", str(image), "--model", "demo-v8", "--imgsz",
            str(imgsz), "--conf", "0.01", "--max-det", str(boxes), "--out", str(out), *extra]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tree)
    output = proc.stdout.read().decode(errors="replace")
    if proc.wait() != 0:
        raise SystemExit(f"run failed ({proc.returncode}):\n{output}")
    peak_kb = int(next(line.split()[1] for line in output.splitlines() if line.startswith("VmHWM")))
    files = [p for p in out.rglob("*") if p.is_file()]
    npz = sum(p.stat().st_size for p in files if p.suffix == ".npz")
    return {"peak_mb": peak_kb / 1024, "written_mb": sum(p.stat().st_size for p in files) / 1e6,
            "npz_mb": npz / 1e6, "files": len(files)}


def max_difference(a: Path, b: Path) -> tuple[float, int]:
    """Largest absolute difference between the two folders' maps, box by box (as `load_output` reads them)."""
    from yolocam.output.reader import load_output

    [ra], [rb] = load_output(a), load_output(b)
    if len(ra.detections) != len(rb.detections):
        raise SystemExit(f"different detections: {len(ra.detections)} vs {len(rb.detections)}")
    worst = 0.0
    for da, db in zip(ra.detections, rb.detections):
        assert np.allclose(da.box, db.box, atol=1e-3), (da.box, db.box)
        worst = max(worst, float(np.abs(da.heatmap - db.heatmap).max()))
    return worst, len(ra.detections)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="12mp,36mp", help="comma list of " + ", ".join(CASES))
    parser.add_argument("--before", default=None, help="a git revision to measure as well (e.g. HEAD~3)")
    parser.add_argument("--grain", type=float, default=0.0, help="per-pixel noise sigma (default 0)")
    parser.add_argument("--args", default="", help="more options for this checkout's runs (e.g. '--save-format png')")
    parser.add_argument("--reuse-before", action="store_true",
                        help="compare with the --before outputs already in --work instead of running them again")
    parser.add_argument("--work", default=None, help="folder for images and outputs (default: a temporary one)")
    args = parser.parse_args()

    work = Path(args.work or tempfile.mkdtemp(prefix="yolocam-membench-"))
    work.mkdir(parents=True, exist_ok=True)
    trees = {"after": REPO}
    if args.before:
        before = work / "before"
        if not before.exists():
            before.mkdir()
            archive = subprocess.run(["git", "-C", str(REPO), "archive", args.before], check=True,
                                     capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", str(before)], input=archive, check=True)
        trees = {f"before ({args.before})": before, **trees}
    print(f"grain {args.grain}  work {work}  options {args.args or '-'}")
    print(f"{'case':5s}  {'tree':22s}  {'boxes':>5s}  {'peak RSS MB':>11s}  {'written MB':>10s}  "
          f"{'npz MB':>7s}  {'max |diff|':>10s}")
    for name in args.cases.split(","):
        h, w, _, imgsz, boxes = CASES[name]
        image = work / f"{name}.png"
        if not image.exists():
            build_image(name, image, args.grain)
        outs = []
        for label, tree in trees.items():
            out = work / f"out-{name}-{label.split()[0]}"
            outs.append(out)
            if args.reuse_before and label != "after" and (out / "manifest.json").exists():
                print(f"{name:5s}  {label:22s}  (output of an earlier run, for the map difference)", flush=True)
                continue
            subprocess.run(["rm", "-rf", str(out)], check=True)
            res = run_cli(tree, image, out, imgsz, boxes, args.args.split() if label == "after" else [])
            diff = ""
            if len(outs) == 2:
                worst, n = max_difference(outs[0], outs[1])
                diff = f"{worst:.5f}"
            print(f"{name:5s}  {label:22s}  {boxes:5d}  {res['peak_mb']:11.0f}  {res['written_mb']:10.1f}  "
                  f"{res['npz_mb']:7.1f}  {diff:>10s}", flush=True)


if __name__ == "__main__":
    main()
