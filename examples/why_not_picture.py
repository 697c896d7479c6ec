"""The README's why-not picture: one panel per question, drawn with yolocam's own crops and labels.

(a) why this class: a demo-marks tile, its class map and its `contrast` map (the class logit minus the
runner-up's); (b) what argued against: a `signed=True` map (red raised the score, blue lowered it);
(c) why missed: a scene whose tile lost its mark, the missed ground truth's map (`explain_missed`);
(d) context: a demo-context tile found by the tag beside it, next to a demo-v8 shape found by its outline.

    python examples/why_not_picture.py [--seed 10] [--out examples/images/why_not.jpg]
"""

import argparse

import cv2
import numpy as np

import yolocam
from yolocam.demo.evidence import make_evidence_scene
from yolocam.demo.scenes import make_scene, scene_seed
from yolocam.demo.why_not_scenes import make_context_scene
from yolocam.evaluation.why_not import outside_share
from yolocam.output.labels import class_colour, label_patch, paste
from yolocam.output.render import box_crop
from yolocam.output.signed_render import signed_box_crop

MARKS = "yolocam/demo/weights/demo-marks.pt"
CONTEXT = "yolocam/demo/weights/demo-context.pt"
TILE = 200  # crop side, px
SIGNED_SEEDS = (8, 13)  # (b): the most confident box of each of these held-out evidence scenes
CONTEXT_SEED, SHAPE_SEED = 5, 10  # (d): the most confident box of a context scene and of a demo-v8 scene
GAP = 6
BG, FG, DIM = (32, 32, 32), (240, 240, 240), (185, 185, 185)

# The figures each panel quotes (examples/README.md "Why not": how they were measured)
FIGURES = {  # two lines each
    "class": ("12 held-out scenes, the map's peak on the deciding mark:", "0.96 of the boxes (class), 0.91 (contrast)"),
    "signed": ("hirescam, fuse sum, signed=True: maps in [-1, 1],", "scaled by their largest magnitude"),
    "missed": ("val, 16 scenes with a mark erased or swapped:", "16 missed, their maps' peak in the box 16 of 16"),
    "context": ("val, share of the heat outside the box (tp_outside):", "demo-context 0.61, demo-v8 0.22"),
}


def caption(width: int, text: str, size: int, fg=FG) -> np.ndarray:
    """One line of `size` px text on the dark ground, `width` px wide (cut if longer)."""
    patch = label_patch(text, size, BG, fg)
    strip = np.full((patch.shape[0] + 6, width, 3), BG, np.uint8)
    paste(strip, patch[:, :width - 8], 6, (strip.shape[0] - patch.shape[0]) // 2)
    return strip


def tile(crop: np.ndarray, text: str) -> np.ndarray:
    """A crop on a TILE-square dark ground with one caption line beneath."""
    out = np.full((TILE, TILE, 3), BG, np.uint8)
    out[:crop.shape[0], :crop.shape[1]] = crop[:TILE, :TILE]
    return np.vstack([out, caption(TILE, text, 14, DIM)])


def panel(title: str, figure: tuple[str, str], tiles: list[np.ndarray]) -> np.ndarray:
    """A titled panel: the question, the figure it shows (two lines), then its crops side by side."""
    gap = np.full((tiles[0].shape[0], GAP, 3), BG, np.uint8)
    row = tiles[0]
    for t in tiles[1:]:
        row = np.hstack([row, gap, t])
    width = row.shape[1]
    return np.vstack([caption(width, title, 18), *(caption(width, line, 14, DIM) for line in figure), row])


def best(result, box) -> object:
    """The detection whose box overlaps `box` most."""
    def iou(d):
        a, b = np.asarray(d.box), np.asarray(box, np.float64)
        w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        return w * h / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h)
    return max(result.detections, key=iou)


def why_this_class(seed: int) -> np.ndarray:
    scene = make_evidence_scene(scene_seed(2026, "test", seed))
    box = scene.boxes[0].tolist()
    a = best(yolocam.Explainer(MARKS).explain(scene.image)[0], box)
    b = best(yolocam.Explainer(MARKS, target="contrast").explain(scene.image)[0], box)
    return panel("(a) Why this class and not another?", FIGURES["class"], [
        tile(box_crop(scene.image, a.heatmap, box, label=f"{a.name} {a.conf:.2f}", size=TILE,
                      colour=class_colour(a.cls)),
             f"class: the {a.name} logit"),
        tile(box_crop(scene.image, b.heatmap, box, label=f"{b.name} {b.conf:.2f}", size=TILE,
                      colour=class_colour(b.cls)),
             f"contrast: {b.name} - runner-up")])


def what_argued_against(seeds=SIGNED_SEEDS) -> np.ndarray:
    exp = yolocam.Explainer(MARKS, method="hirescam", fuse="sum", signed=True)
    tiles = []
    for seed in seeds:  # each scene's most confident box
        scene = make_evidence_scene(scene_seed(2026, "test", seed))
        d = exp.explain(scene.image)[0].detections[0]
        tiles.append(tile(signed_box_crop(scene.image, d.heatmap, d.box, label=f"{d.name} {d.conf:.2f}", size=TILE,
                                          colour=class_colour(d.cls)),
                          "red raised it, blue lowered it"))
    return panel("(b) What argued against this box?", FIGURES["signed"], tiles)


def why_missed(seed: int) -> np.ndarray:
    s = scene_seed(2026, "test", seed)
    original, shown = make_evidence_scene(s), make_evidence_scene(s, edits={0: None})
    m = yolocam.Explainer(MARKS).explain_missed(shown.image, original.boxes[:1], original.classes[:1])[0]
    box = original.boxes[0].tolist()
    before = box_crop(original.image, np.zeros(original.image.shape[:2], np.float32), box,
                      label=f"{m.name} (ground truth)", size=TILE,
                      colour=class_colour(m.cls))
    after = box_crop(shown.image, m.heatmap, box, label=f"{m.name} score {m.conf:.3f}", size=TILE,
                     colour=class_colour(m.cls))
    return panel("(c) Why was this object missed?", FIGURES["missed"], [
        tile(before, f"as labelled: a {m.name} mark"),
        tile(after, "mark erased: where it looked")])


def context(ctx_seed: int = CONTEXT_SEED, shape_seed: int = SHAPE_SEED) -> np.ndarray:
    ctx = make_context_scene(scene_seed(2026, "val", ctx_seed))
    d = yolocam.Explainer(CONTEXT, imgsz=160).explain(ctx["image"])[0].detections[0]  # most confident
    shapes = make_scene(shape_seed)
    e = yolocam.Explainer("demo-v8").explain(shapes.image)[0].detections[0]
    return panel("(d) Does it rely on what surrounds the box?", FIGURES["context"], [
        tile(box_crop(ctx["image"], d.heatmap, d.box, label=f"{d.name} {d.conf:.2f}", size=TILE, context=0.8,
                      colour=class_colour(d.cls)),
             f"by the tag: {outside_share(d.heatmap, d.box):.2f} outside"),
        tile(box_crop(shapes.image, e.heatmap, e.box, label=f"{e.name} {e.conf:.2f}", size=TILE, context=0.8,
                      colour=class_colour(e.cls)),
             f"demo-v8: {outside_share(e.heatmap, e.box):.2f} outside")])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=10)
    ap.add_argument("--out", default="examples/images/why_not.jpg")
    a = ap.parse_args()
    panels = [why_this_class(a.seed), what_argued_against(), why_missed(a.seed), context()]
    sep = np.full((panels[0].shape[0], 16, 3), BG, np.uint8)
    top, bottom = np.hstack([panels[0], sep, panels[1]]), np.hstack([panels[2], sep, panels[3]])
    picture = np.vstack([top, np.full((14, top.shape[1], 3), BG, np.uint8), bottom])
    cv2.imwrite(a.out, picture, [cv2.IMWRITE_JPEG_QUALITY, 88])
    print("saved", a.out)


if __name__ == "__main__":
    main()
