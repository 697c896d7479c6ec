"""Segmentation, pose and oriented-box labels of the generated scenes (yolocam.demo.task_labels), checked
against the scenes' own geometry and against ultralytics' own label reader."""

import math

import cv2
import numpy as np
import pytest
import torch

from yolocam.demo import scenes, task_labels as tl

SEEDS = range(8)


@pytest.fixture(scope="module")
def scene_list():
    return [scenes.make_scene(s) for s in SEEDS]


def test_scene_geometry_is_recorded(scene_list):
    for s in scene_list:
        n = len(s.classes)
        assert s.owner.shape == s.image.shape[:2] and s.owner.dtype == np.int16
        assert len(s.outlines) == n and s.frames.shape == (n, 5)
        assert set(np.unique(s.owner).tolist()) <= set(range(-1, n))
        for i, (outline, box) in enumerate(zip(s.outlines, s.boxes)):
            lo, hi = outline.min(0), outline.max(0)  # the outline spans the box it was labelled with
            assert np.allclose(lo, box[:2], atol=2.0) and np.allclose(hi, box[2:], atol=2.0)  # box: rasterised, exclusive end
            assert (s.owner == i).sum() >= scenes.MIN_VISIBLE * 0.9 * cv2.contourArea(outline)


def test_visible_masks_follow_occlusion(scene_list):
    for s in scene_list:
        masks = tl.visible_masks(s)
        assert masks.shape == (len(s.classes), *s.image.shape[:2])
        assert masks.sum(0).max() <= 1  # one owner per pixel
        for m, outline in zip(masks, s.outlines):
            inside = cv2.pointPolygonTest(outline.reshape(-1, 1, 2), tuple(map(float, np.argwhere(m)[0][::-1])), True)
            assert inside >= -1.5  # visible pixels lie on the shape itself


def test_frames_are_tight_oriented_boxes(scene_list):
    """Every outline point lies in its oriented box and touches it: the box is the shape's own frame."""
    for s in scene_list:
        corners = tl.frame_corners(s.frames)
        for outline, quad, frame, cls in zip(s.outlines, corners, s.frames, s.classes):
            d = np.array([cv2.pointPolygonTest(quad.reshape(-1, 1, 2), tuple(map(float, p)), True) for p in outline])
            assert d.min() >= -1e-2 and np.abs(d).min() <= 1e-2
            if cls == 1:  # a square's frame is its minimum-area rectangle
                (_, _), (w, h), _ = cv2.minAreaRect(outline)
                assert w * h == pytest.approx(frame[2] * frame[3], rel=0.02)


def test_frame_corners_by_hand():
    q = tl.frame_corners(np.array([[10.0, 20.0, 4.0, 2.0, math.pi / 2]]))[0]
    # a 4 x 2 box turned by 90 degrees: 2 wide, 4 tall (image axes, y down)
    assert np.allclose(np.sort(q[:, 0]), [9, 9, 11, 11], atol=1e-5)
    assert np.allclose(np.sort(q[:, 1]), [18, 18, 22, 22], atol=1e-5)


def test_keypoints_by_hand_on_an_upright_square():
    s = scenes.Scene(image=np.zeros((40, 40, 3), np.uint8), boxes=np.array([[10, 10, 30, 30]], np.float32),
                     classes=np.array([1]), owner=np.full((40, 40), -1, np.int16),
                     outlines=[np.array([[10, 10], [30, 10], [30, 30], [10, 30]], np.float32)],
                     frames=np.array([[20, 20, 20, 20, 0]], np.float32))
    s.owner[10:30, 10:30] = 0
    s.owner[10:20, 24:30] = -1  # the top right corner is hidden; the right keypoint (30, 20) still shows
    k = tl.scene_keypoints(s)[0]
    assert np.allclose(k[:, :2], [[20, 20], [20, 10], [30, 20], [20, 30], [10, 20]])  # flat sides: midpoints
    assert k[:, 2].tolist() == [2, 2, 2, 2, 2]
    s.owner[14:26, 24:30] = -1  # now it is covered
    assert tl.scene_keypoints(s)[0, :, 2].tolist() == [2, 2, 1, 2, 2]


@pytest.mark.parametrize("task", tl.TASKS)
def test_ultralytics_reads_the_labels(tmp_path, task):
    """ultralytics' own dataset loader accepts every label and reads back the same geometry."""
    from ultralytics.data.build import build_yolo_dataset
    from ultralytics.data.utils import check_det_dataset
    from ultralytics.cfg import get_cfg

    data_yaml = tl.write_task_dataset(tmp_path, task, n_train=2, n_val=4, seed=3)
    data = check_det_dataset(str(data_yaml), autodownload=False)
    cfg = get_cfg(overrides={"task": task, "imgsz": 320, "rect": True, "mode": "val"})
    ds = build_yolo_dataset(cfg, data["val"], 4, data, mode="val", rect=True)
    ds.labels  # scanned; a rejected file would leave its labels empty
    truth = [scenes.make_scene(scenes.scene_seed(3, "val", i)) for i in range(4)]
    for lab, s in zip(sorted(ds.labels, key=lambda r: r["im_file"]), truth):
        assert len(lab["cls"]) == len(s.classes)
        assert lab["cls"].ravel().astype(int).tolist() == s.classes.tolist()
        h, w = s.image.shape[:2]
        if task == "pose":
            assert np.allclose(lab["keypoints"][..., :2] * [w, h], tl.scene_keypoints(s)[..., :2], atol=0.02)
        elif task == "obb":
            corners = np.stack([np.clip(q, 0, [w, h]) for q in tl.frame_corners(s.frames)])
            assert np.allclose(np.asarray(lab["segments"]) * [w, h], corners, atol=0.02)
        else:
            for seg, m in zip(lab["segments"], tl.visible_masks(s)):
                drawn = np.zeros((h, w), np.uint8)
                cv2.fillPoly(drawn, [np.round(seg * [w, h]).astype(np.int32)], 1)
                iou = (drawn.astype(bool) & m).sum() / (drawn.astype(bool) | m).sum()
                assert iou > 0.8


def test_unknown_task_is_refused(tmp_path):
    with pytest.raises(ValueError, match="segment, pose, obb"):
        tl.task_labels(scenes.make_scene(0), "classify")
    with pytest.raises(ValueError, match="segment, pose, obb"):
        tl.write_task_dataset(tmp_path, "detect", 1, 1)
