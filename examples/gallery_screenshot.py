"""Screenshots of yolocam's HTML galleries in headless Chromium: the README's gallery pictures.

    python examples/gallery_screenshot.py demo --out examples/images/gallery.jpg --summary examples/images/demo_summary.jpg
    python examples/gallery_screenshot.py val --out examples/images/val_gallery.jpg
    python examples/gallery_screenshot.py PATH/index.html --out shot.jpg

`demo` runs `yolocam demo` and `val` runs `yolocam val --model demo-v8` (32 generated scenes, its worst cases'
gallery `worst/index.html`) in a temporary folder, as a user types them; a path screenshots an existing
gallery. The page is loaded from the file system (nothing is fetched) at `--width` x `--height` CSS pixels,
its scripts run and its pictures loaded, and saved as a JPEG. `--summary` also copies the demo's
`summary.png`. Needs Chromium on PATH (`bash .ci/install_chromium.sh`).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run", "--disable-sync",
         "--disable-extensions", "--disable-background-networking", "--disable-component-update", "--mute-audio"]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    raise SystemExit("no chromium on PATH: run bash .ci/install_chromium.sh")


def yolocam(*args: str) -> None:
    """One `yolocam` command, as typed (its output passed through)."""
    cmd = [sys.executable, "-m", "yolocam", *args]
    print("$", "yolocam", " ".join(args), flush=True)
    if subprocess.run(cmd).returncode != 0:
        raise SystemExit(f"yolocam {args[0]} failed")


def screenshot(page: Path, out: Path, width: int, height: int, quality: int, workdir: Path) -> None:
    """`page` rendered by headless Chromium at width x height, written to `out` (JPEG)."""
    png = workdir / "shot.png"
    cmd = [chromium(), *FLAGS, f"--user-data-dir={workdir / 'profile'}", f"--window-size={width},{height}",
           "--virtual-time-budget=15000", f"--screenshot={png}", page.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    image = cv2.imread(str(png))
    if proc.returncode != 0 or image is None:
        raise SystemExit(f"chromium made no screenshot of {page}: {proc.stderr[-500:]}")
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    print(f"{out}: {image.shape[1]} x {image.shape[0]} px, from {page}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("gallery", help="demo, val, or the path of a gallery's index.html")
    ap.add_argument("--out", required=True, help="the screenshot (JPEG)")
    ap.add_argument("--summary", default=None, help="demo: also write its summary.png here (JPEG)")
    ap.add_argument("--model", default="demo-v8", help="demo and val: the model (default demo-v8)")
    ap.add_argument("--seed", type=int, default=0, help="demo: the scene (default 0)")
    ap.add_argument("--width", type=int, default=1100)
    ap.add_argument("--height", type=int, default=1250)
    ap.add_argument("--quality", type=int, default=85, help="JPEG quality (default 85)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="yolocam-screenshot-") as tmp:
        work = Path(tmp)
        if args.gallery == "demo":
            yolocam("demo", "--model", args.model, "--seed", str(args.seed), "--out", str(work / "demo"))
            page = work / "demo" / "index.html"
            if args.summary:
                summary = cv2.imread(str(work / "demo" / "summary.png"))
                cv2.imwrite(args.summary, summary, [cv2.IMWRITE_JPEG_QUALITY, args.quality])
                print(f"{args.summary}: {summary.shape[1]} x {summary.shape[0]} px, the demo's summary.png")
        elif args.gallery == "val":
            yolocam("val", "--model", args.model, "--out", str(work / "val"))
            page = work / "val" / "worst" / "index.html"
        else:
            page = Path(args.gallery)
        if not page.is_file():
            raise SystemExit(f"no gallery at {page}")
        screenshot(page, Path(args.out), args.width, args.height, args.quality, work)


if __name__ == "__main__":
    main()
