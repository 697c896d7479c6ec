"""Segmentation, pose and oriented-box labels for the generated shape scenes (``scenes.make_scene``).

The generator knows every shape exactly, so each task's ground truth comes from its geometry:

- ``segment``: the shape's visible pixels (``scene.owner == i``: occlusion applied) and their outline;
- ``pose``: five keypoints per shape (``KEYPOINT_NAMES``): the centroid of its area and its top,
  right, bottom and left extreme points (the mean of its outline points within 3 % of the shape's
  extent from the extreme, so a flat side gives its midpoint). Visible (2) when the shape itself is
  seen at the keypoint, else occluded (1);
- ``obb``: the shape's own frame (``scene.frames``): its unrotated bounding box, rotated with it;
- ``classify``: square crops around each shape (``classify_crops``), labelled with its class; the shape
  fills 35-60 % of the crop's side and may share it with clutter and parts of other shapes.

Typical use::

    scene = make_scene(7)
    kpts = scene_keypoints(scene)                 # (N, 5, 3) x, y (pixels), visibility
    text = task_labels(scene, "obb")              # ultralytics label file for one image
    yaml_path = write_task_dataset("/tmp/ds", "pose", n_train=100, n_val=10)
"""

from __future__ import annotations

import pathlib

import cv2
import numpy as np

from .scenes import CLASS_NAMES, Scene, make_scene, scene_seed

__all__ = ["KEYPOINT_NAMES", "FLIP_IDX", "TASKS", "classify_crops", "write_classify_split", "visible_masks", "mask_polygon", "scene_keypoints",
           "frame_corners", "task_labels", "write_task_split", "write_task_yaml", "write_task_dataset"]

KEYPOINT_NAMES = ("centre", "top", "right", "bottom", "left")
FLIP_IDX = (0, 1, 4, 3, 2)  # left-right flip swaps right and left
TASKS = ("segment", "pose", "obb")
CROP_SIZE = 128  # side of the classification crops, pixels
_EXTREME_TOL = 0.03  # share of the shape's extent within which outline points count as the extreme


def visible_masks(scene: Scene) -> np.ndarray:
    """(N, H, W) bool: each labelled shape's visible pixels."""
    return scene.owner[None] == np.arange(len(scene.classes), dtype=np.int16)[:, None, None]


def mask_polygon(mask: np.ndarray) -> np.ndarray:
    """(K, 2) float32 outline in pixels of the largest connected part of a bool mask (H, W)."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return np.zeros((0, 2), np.float32)
    return max(contours, key=cv2.contourArea).reshape(-1, 2).astype(np.float32)


def scene_keypoints(scene: Scene) -> np.ndarray:
    """(N, 5, 3) float32: per shape, x, y in pixels and visibility (2 seen, 1 occluded) of each keypoint."""
    h, w = scene.owner.shape
    out = np.zeros((len(scene.classes), len(KEYPOINT_NAMES), 3), np.float32)
    for i, outline in enumerate(scene.outlines):
        pts = outline.astype(np.float64)
        m = cv2.moments(pts.astype(np.float32))
        centre = np.array([m["m10"] / m["m00"], m["m01"] / m["m00"]]) if m["m00"] else pts.mean(0)
        tol = _EXTREME_TOL * float(np.ptp(pts, 0).max())
        top = pts[pts[:, 1] <= pts[:, 1].min() + tol].mean(0)
        right = pts[pts[:, 0] >= pts[:, 0].max() - tol].mean(0)
        bottom = pts[pts[:, 1] >= pts[:, 1].max() - tol].mean(0)
        left = pts[pts[:, 0] <= pts[:, 0].min() + tol].mean(0)
        for k, p in enumerate((centre, top, right, bottom, left)):
            q = p + (centre - p) * min(1.0, 2.0 / max(np.linalg.norm(centre - p), 1e-6))  # 2 px inside
            x, y = int(np.clip(q[0], 0, w - 1)), int(np.clip(q[1], 0, h - 1))
            out[i, k] = (p[0], p[1], 2.0 if scene.owner[y, x] == i else 1.0)
    return out


def frame_corners(frames: np.ndarray) -> np.ndarray:
    """(N, 4, 2) corners in pixels of oriented boxes (N, 5) cx, cy, w, h, angle (radians)."""
    cx, cy, w, h, a = (frames[:, j, None] for j in range(5))
    c, s = np.cos(a), np.sin(a)
    sx, sy = np.array([[1, 1, -1, -1]]), np.array([[1, -1, -1, 1]])
    xs = cx + sx * w / 2 * c - sy * h / 2 * s
    ys = cy + sx * w / 2 * s + sy * h / 2 * c
    return np.stack([xs, ys], -1).astype(np.float32)


def task_labels(scene: Scene, task: str) -> str:
    """The ultralytics label file (normalised coordinates) of ``scene`` for ``task`` in ``TASKS``."""
    h, w = scene.owner.shape
    scale = np.array([w, h], np.float64)
    lines = []
    if task == "segment":
        for c, mask in zip(scene.classes.tolist(), visible_masks(scene)):
            poly = mask_polygon(mask) / scale
            lines.append(f"{c} " + " ".join(f"{v:.6f}" for v in poly.ravel()))
    elif task == "pose":
        for c, box, kpts in zip(scene.classes.tolist(), scene.boxes, scene_keypoints(scene)):
            x1, y1, x2, y2 = box.tolist()
            cols = [(x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h]
            for x, y, v in kpts.tolist():
                cols += [min(max(x / w, 0.0), 1.0), min(max(y / h, 0.0), 1.0), v]
            lines.append(f"{c} " + " ".join(f"{v:.6f}" for v in cols))
    elif task == "obb":  # corners clipped to the image, as ultralytics' label checks require
        for c, corners in zip(scene.classes.tolist(), frame_corners(scene.frames)):
            pts = np.clip(corners / scale, 0.0, 1.0)
            lines.append(f"{c} " + " ".join(f"{v:.6f}" for v in pts.ravel()))
    else:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    return "\n".join(lines) + ("\n" if lines else "")


def write_task_split(out_dir, split: str, start: int, stop: int, seed: int = 0, tasks=TASKS) -> None:
    """Write scenes ``start``..``stop``-1 of ``split`` once to ``out_dir/images/<split>`` and, per task,
    a hard link (or copy) in ``out_dir/<task>/images/<split>`` with its labels in ``<task>/labels/<split>``."""
    out = pathlib.Path(out_dir)
    for i in range(start, stop):
        scene = make_scene(scene_seed(seed, split, i))
        name = f"{split}_{seed}_{i:06d}.jpg"
        src = out / "images" / split / name
        src.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(src), scene.image, [cv2.IMWRITE_JPEG_QUALITY, 95])
        for task in tasks:
            img, lab = out / task / "images" / split / name, out / task / "labels" / split / f"{name[:-4]}.txt"
            img.parent.mkdir(parents=True, exist_ok=True)
            lab.parent.mkdir(parents=True, exist_ok=True)
            img.unlink(missing_ok=True)
            try:
                img.hardlink_to(src)
            except OSError:
                img.write_bytes(src.read_bytes())
            lab.write_text(task_labels(scene, task))


def write_task_yaml(task_dir, task: str, splits=("train", "val")) -> pathlib.Path:
    """Write ``task_dir/data.yaml`` for ``task`` (keypoint shape, names and flip order for pose)."""
    root = pathlib.Path(task_dir).resolve()
    lines = [f"path: {root}"] + [f"{s}: images/{s}" for s in splits] + ["names:"]
    lines += [f"  {i}: {n}" for i, n in enumerate(CLASS_NAMES)]
    if task == "pose":
        lines += [f"kpt_shape: [{len(KEYPOINT_NAMES)}, 3]", f"flip_idx: {list(FLIP_IDX)}", "kpt_names:"]
        lines += [f"  {i}: [{', '.join(KEYPOINT_NAMES)}]" for i in range(len(CLASS_NAMES))]
    path = root / "data.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def write_task_dataset(out_dir, task: str, n_train: int, n_val: int, seed: int = 0) -> pathlib.Path:
    """One task's ultralytics dataset under ``out_dir/<task>`` (train and val); returns its data.yaml."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    write_task_split(out_dir, "train", 0, n_train, seed, (task,))
    write_task_split(out_dir, "val", 0, n_val, seed, (task,))
    return write_task_yaml(pathlib.Path(out_dir) / task, task)


def classify_crops(scene: Scene, seed: int) -> list[tuple[np.ndarray, int, np.ndarray]]:
    """Per labelled shape: (BGR crop (CROP_SIZE, CROP_SIZE, 3), its class, its box xyxy in crop pixels).

    The crop is a square of 1.7-2.9 x the shape's larger side, centred on it up to a jitter of 15 % of
    the side, cut from the scene (padded by edge reflection where it leaves the image) and resized.
    ``seed`` fixes the crops (deterministic)."""
    rng = np.random.default_rng(seed)
    out = []
    for box, cls in zip(scene.boxes, scene.classes.tolist()):
        ext = float(max(box[2:] - box[:2]))
        side = ext * rng.uniform(1.7, 2.9)
        cx, cy = (box[:2] + box[2:]) / 2 + rng.uniform(-0.15, 0.15, 2) * side
        x0, y0 = cx - side / 2, cy - side / 2
        scale = CROP_SIZE / side
        warp = np.array([[scale, 0, -x0 * scale], [0, scale, -y0 * scale]], np.float64)
        crop = cv2.warpAffine(scene.image, warp, (CROP_SIZE, CROP_SIZE), flags=cv2.INTER_AREA,
                              borderMode=cv2.BORDER_REFLECT_101)
        cbox = np.array([(box[0] - x0) * scale, (box[1] - y0) * scale, (box[2] - x0) * scale, (box[3] - y0) * scale],
                        np.float32)
        out.append((crop, cls, cbox))
    return out


def write_classify_split(out_dir, split: str, start: int, stop: int, seed: int = 0) -> None:
    """Crops of scenes ``start``..``stop``-1 of ``split`` in ultralytics' classification layout:
    ``out_dir/<split>/<class name>/<split>_<seed>_<scene>_<k>.png``."""
    out = pathlib.Path(out_dir)
    for i in range(start, stop):
        sseed = scene_seed(seed, split, i)
        for k, (crop, cls, _) in enumerate(classify_crops(make_scene(sseed), sseed)):
            path = out / split / CLASS_NAMES[cls] / f"{split}_{seed}_{i:06d}_{k}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), crop)
