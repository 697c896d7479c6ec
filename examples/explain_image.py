"""Explain every detection in one image and save the per-box heatmaps.

    python examples/explain_image.py [IMAGE] [--model PATH]

With no image, a generated shapes scene is used; with no model, the bundled demo detector.
"""

import argparse

import yolocam
from yolocam.demo.scenes import make_scene


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", nargs="?", help="image path (default: a generated scene)")
    parser.add_argument("--model", default=None, help="checkpoint path or demo name (default: demo-v8)")
    parser.add_argument("--out", default="runs/yolocam/example")
    args = parser.parse_args()

    source = args.image if args.image else make_scene(seed=7).image
    exp = yolocam.Explainer(args.model)
    result = exp.explain(source)[0]
    for d in result.detections:
        peak_y, peak_x = divmod(int(d.heatmap.argmax()), d.heatmap.shape[1])
        inside = yolocam.metrics.energy_in_box(d.heatmap, d.box)
        print(f"{d.name:9s} conf={d.conf:.2f} box={[round(v) for v in d.box]} "
              f"peak=({peak_x},{peak_y}) energy-in-box={inside:.2f}")
    print("saved to", result.save(args.out))


if __name__ == "__main__":
    main()
