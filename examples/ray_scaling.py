"""Throughput of `yolocam explain --ray` against the number of workers, and what bounds it.

    python examples/ray_scaling.py [--scenes 32] [--imgsz 320] [--workers 1,2] [--address ADDRESS] [--gpus-per-worker G]

Writes `--scenes` generated scenes (PNG, 320-640 px), then:
1. per stage, in this process (one thread): decode (ultralytics' image read), explain (demo-v8, the
   default method, all boxes), write (maps, overlays as JPEG, the CLI's default) — ms per image;
2. one `yolocam explain`-equivalent run in this process (`run_explain`: decode ahead, write behind);
3. `explain_dataset` with each worker count on Ray (a local Ray of all CPUs, or `--address`):
   whole-call images/s, the time until the first image is back (actors start, models load), and
   the steady rate after it: (images - 1) / (whole call - time to the first image).
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

import cv2

from yolocam.demo.scenes import make_scene


def stage_times(paths, imgsz: int, out: Path) -> dict:
    import torch

    from yolocam.explain.explainer import Explainer
    from yolocam.inputs.images import iter_images
    from yolocam.output.export import ExportWriter

    torch.set_num_threads(1)
    exp = Explainer("demo-v8", imgsz=imgsz, device="cpu")
    writer = ExportWriter(out, append=False, save_format="jpg")
    t = {"decode": 0.0, "explain": 0.0, "write": 0.0}
    for k, path in enumerate(paths):
        t0 = time.perf_counter()
        [item] = list(iter_images([path]))
        t1 = time.perf_counter()
        [result] = exp.iter_explain([item])
        t2 = time.perf_counter()
        writer.write_files(result, f"s{k}")
        t3 = time.perf_counter()
        t["decode"] += t1 - t0
        t["explain"] += t2 - t1
        t["write"] += t3 - t2
    return {k: 1000 * v / len(paths) for k, v in t.items()}


def single_process(folder: Path, imgsz: int, out: Path) -> float:
    import torch

    from yolocam.explain.explainer import Explainer
    from yolocam.explain.pipeline import run_explain
    from yolocam.inputs.images import resolve_source
    from yolocam.output.export import ExportWriter

    torch.set_num_threads(os.cpu_count() or 1)
    start = time.perf_counter()
    exp = Explainer("demo-v8", imgsz=imgsz, device="cpu")
    entries = resolve_source(str(folder))
    writer = ExportWriter(out, append=False, save_format="jpg")
    counts = run_explain(exp, entries, writer, 0.25, 0.7, None, 300, 1)
    writer.finish()
    return counts["images"] / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=32)
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--address", default=None, help="Ray cluster (default: a local Ray of all CPUs)")
    parser.add_argument("--gpus-per-worker", type=float, default=None)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="yolocam_scaling_"))
    folder = tmp / "scenes"
    folder.mkdir()
    paths = []
    for k in range(args.scenes):
        paths.append(str(folder / f"scene{k:03d}.png"))
        cv2.imwrite(paths[-1], make_scene(1000 + k).image)
    ms = stage_times(paths, args.imgsz, tmp / "stages")
    print(f"per image, one thread: decode {ms['decode']:.1f} ms, explain {ms['explain']:.1f} ms, "
          f"write {ms['write']:.1f} ms")
    print(f"single process (yolocam explain): {single_process(folder, args.imgsz, tmp / 'single'):.2f} images/s")

    import ray

    from yolocam.distributed import explain_dataset

    if args.address:
        ray.init(address=args.address, include_dashboard=False, log_to_driver=False)
    else:
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    print(f"Ray: {ray.cluster_resources().get('CPU', 0):g} CPUs, {ray.cluster_resources().get('GPU', 0):g} GPUs")
    for n in (int(v) for v in args.workers.split(",")):
        counts = explain_dataset(str(folder), tmp / f"ray{n}", model="demo-v8", imgsz=args.imgsz, workers=n,
                                 gpus_per_worker=args.gpus_per_worker, save_format="jpg", resume=False)
        steady = (counts["images"] - 1) / max(1e-9, counts["seconds"] - counts["first_s"])
        print(f"ray, {n} worker{'s' if n > 1 else ''}: {counts['images'] / counts['seconds']:.2f} images/s whole call "
              f"({counts['images']} images in {counts['seconds']:.1f} s, the first after {counts['first_s']:.1f} s), "
              f"{steady:.2f} images/s steady")
    ray.shutdown()


if __name__ == "__main__":
    main()
