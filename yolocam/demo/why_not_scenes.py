"""Validation datasets whose why-not answers are known, from evidence scenes (`demo.evidence`).

`write_edited_dataset` writes evidence scenes whose *images* are edited (a tile's mark erased, or swapped for
another class's mark) while their *labels* stay those of the unedited scene. A detector that reads the marks
(`demo-marks`) then misses the erased tile (a missed ground truth whose map should lie in the tile) and
detects the swapped tile as the other class (a confusion whose contrast map should lie on the mark).

    yaml = write_edited_dataset("/tmp/edited", seeds=[11, 12], edits=[{0: None}, {0: 2}], size=(320, 320))

`make_context_scene` / `write_context_dataset`: 160 x 160 scenes where a plain tile's class is set by a *tag*
mark beside it, outside its box; `demo/weights/demo-context.pt` was trained on them (the demo-marks network,
0.91 M parameters, from scratch, CPU, 23 min on 2 shared cores):

    python -c "from yolocam.demo.why_not_scenes import write_context_dataset as w; w('/tmp/ctx/data', 1200, 100)"
    cd weights_scripts && python train.py --model demo-marks.yaml --data /tmp/ctx/data/data.yaml --imgsz 160 \
        --batch 16 --epochs 24 --close-mosaic 5 --project /tmp/ctx/runs --name context --lr0 0.002
    python strip.py /tmp/ctx/runs/context/weights/last.pt ../yolocam/demo/weights/demo-context.pt

Held out (24 scenes, seed 2026): mAP50 0.995; its maps' peak lies on the tag for 43 of 48 true positives.
"""

from __future__ import annotations

import pathlib
from typing import Sequence

import cv2

from .evidence import EvidenceScene, make_evidence_scene, write_evidence_yaml, yolo_labels


def edited_scene(seed: int, edits: dict, size: tuple[int, int]) -> tuple[EvidenceScene, EvidenceScene]:
    """(the unedited scene, the edited one) of `seed` (`make_evidence_scene`'s `edits`)."""
    return make_evidence_scene(seed, size=size), make_evidence_scene(seed, size=size, edits=dict(edits))


def write_edited_dataset(out_dir, seeds: Sequence[int], edits: Sequence[dict], size: tuple[int, int] = (320, 320),
                         split: str = "val") -> pathlib.Path:
    """An ultralytics dataset (images/<split>, labels/<split>, data.yaml) of the edited scenes (PNG, lossless),
    labelled with the unedited scenes' ground truth. Returns data.yaml's path."""
    if len(seeds) != len(edits):
        raise ValueError(f"expected one edits dict per seed, got {len(seeds)} seeds and {len(edits)} edits")
    out = pathlib.Path(out_dir)
    images, labels = out / "images" / split, out / "labels" / split
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    for k, (seed, edit) in enumerate(zip(seeds, edits)):
        original, shown = edited_scene(int(seed), edit, size)
        name = f"{split}_{k:04d}"
        cv2.imwrite(str(images / f"{name}.png"), shown.image)
        (labels / f"{name}.txt").write_text(yolo_labels(original))
    path = write_evidence_yaml(out, splits=(split,))
    path.write_text(path.read_text().replace(f"{split}: images/{split}\n",
                                             f"train: images/{split}\nval: images/{split}\n"))  # both keys required
    return path


# --------------------------------------------------------------------------- context scenes
# A tile's class is set by a *tag* beside it, outside its box: a detector trained on these must look there.
CONTEXT_SIZE = (160, 160)  # (H, W)
CONTEXT_TILE = (30, 46)  # tile side, pixels (inclusive)
TAG_DIAMETER = (12.0, 16.0)
TAG_GAP = 4  # pixels between the tile's left edge and its tag's disc


def make_context_scene(seed: int, size: tuple[int, int] = CONTEXT_SIZE) -> dict:
    """One context scene: 1-3 plain tiles (one colour, no mark), each with a tag mark (`evidence.mark_coverage`:
    dot, ring or plus) just left of it, vertically centred, `TAG_GAP` px away; the tag's class is the tile's.
    Distractors: an untagged tile and 1-2 lone marks away from every tile. Returns image (BGR uint8), boxes
    (N, 4) the tiles, classes (N,), tag_centres (N, 2), tag_diameters (N,)."""
    import math

    import numpy as np

    from .evidence import _background, _colour_far, _free, mark_coverage

    h, w = int(size[0]), int(size[1])
    rng = np.random.default_rng(int(seed))
    canvas = _background(h, w, rng)
    taken, tiles, marks = [], [], []  # tiles: (x0, y0, side, colour, labelled); marks: (cls, cx, cy, d, colour)
    n_obj = int(rng.integers(1, 4))
    for k in range(n_obj + 1):
        for _ in range(100):
            side = int(rng.integers(CONTEXT_TILE[0], CONTEXT_TILE[1] + 1))
            d = float(rng.uniform(*TAG_DIAMETER))
            reach = int(math.ceil(d + TAG_GAP)) if k < n_obj else 0  # the tag's room left of the tile
            x0, y0 = int(rng.integers(3 + reach, w - side - 3 + 1)), int(rng.integers(3, h - side - 3 + 1))
            if _free((x0 - reach, y0, x0 + side, y0 + side), taken):
                break
        else:
            continue
        taken.append((x0 - reach, y0, x0 + side, y0 + side))
        colour = _colour_far(canvas[y0:y0 + side, x0:x0 + side].reshape(-1, 3).mean(0), rng, 30.0, 80.0)
        tiles.append((x0, y0, side, colour, k < n_obj))
        if k < n_obj:
            cx, cy = x0 - TAG_GAP - d / 2, y0 + side / 2
            ref = canvas[int(cy - d / 2):int(cy + d / 2) + 1, int(cx - d / 2):int(cx + d / 2) + 1].reshape(-1, 3).mean(0)
            marks.append((int(rng.integers(0, 3)), cx, cy, d, _colour_far(ref, rng, min_luma=80.0), len(tiles) - 1))
    for _ in range(int(rng.integers(1, 3))):  # lone marks: no tile within reach
        d = float(rng.uniform(*TAG_DIAMETER))
        cx, cy = float(rng.uniform(3 + d / 2, w - 3 - d / 2)), float(rng.uniform(3 + d / 2, h - 3 - d / 2))
        rect = (cx - d / 2 - 14, cy - d / 2 - 14, cx + d / 2 + 14, cy + d / 2 + 14)
        if _free(rect, taken):
            taken.append(rect)
            ref = canvas[int(cy - d / 2):int(cy + d / 2) + 1, int(cx - d / 2):int(cx + d / 2) + 1].reshape(-1, 3).mean(0)
            marks.append((int(rng.integers(0, 3)), cx, cy, d, _colour_far(ref, rng, min_luma=80.0), None))
    for x0, y0, side, colour, _ in tiles:
        canvas[y0:y0 + side, x0:x0 + side] = colour
    for cls, cx, cy, d, colour, _ in marks:
        a = mark_coverage((h, w), cls, cx, cy, d)[..., None]
        canvas = canvas * (1 - a) + colour * a
    canvas = canvas + rng.normal(0, float(rng.uniform(1.0, 3.0)), canvas.shape).astype(np.float32)
    tagged = [m for m in marks if m[5] is not None]
    boxes = [[tiles[m[5]][0], tiles[m[5]][1], tiles[m[5]][0] + tiles[m[5]][2], tiles[m[5]][1] + tiles[m[5]][2]]
             for m in tagged]
    return {"image": np.clip(np.round(canvas), 0, 255).astype(np.uint8),
            "boxes": np.asarray(boxes, np.float32).reshape(-1, 4), "classes": np.asarray([m[0] for m in tagged], np.int64),
            "tag_centres": np.asarray([(m[1], m[2]) for m in tagged], np.float32).reshape(-1, 2),
            "tag_diameters": np.asarray([m[3] for m in tagged], np.float32)}


def write_context_dataset(out_dir, n_train: int, n_val: int, seed: int = 0,
                          size: tuple[int, int] = CONTEXT_SIZE) -> pathlib.Path:
    """An ultralytics dataset of context scenes (seeds from `scenes.scene_seed`, classes dot, ring, plus: the
    tags'). Returns data.yaml's path."""
    from .scenes import scene_seed

    out = pathlib.Path(out_dir)
    for split, n in (("train", n_train), ("val", n_val)):
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(int(n)):
            s = make_context_scene(scene_seed(seed, split, i), size)
            hh, ww = s["image"].shape[:2]
            cv2.imwrite(str(out / "images" / split / f"{split}_{i:06d}.png"), s["image"])
            (out / "labels" / split / f"{split}_{i:06d}.txt").write_text("".join(
                f"{c} {(x1 + x2) / 2 / ww:.6f} {(y1 + y2) / 2 / hh:.6f} {(x2 - x1) / ww:.6f} {(y2 - y1) / hh:.6f}\n"
                for (x1, y1, x2, y2), c in zip(s["boxes"].tolist(), s["classes"].tolist())))
    return write_evidence_yaml(out, splits=("train", "val"))
