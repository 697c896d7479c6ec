"""Fast checks for the procedural scene generator (yolocam.scenes)."""

import numpy as np
import pytest

from yolocam.demo import scenes  # imports no torch (the package loads its heavy parts lazily)


def test_class_names():
    assert scenes.CLASS_NAMES == ("circle", "square", "triangle", "cross")


def test_deterministic_by_seed():
    a, b, c = scenes.make_scene(3), scenes.make_scene(3), scenes.make_scene(4)
    assert np.array_equal(a.image, b.image)
    assert np.array_equal(a.boxes, b.boxes) and np.array_equal(a.classes, b.classes)
    assert a.image.shape != c.image.shape or not np.array_equal(a.image, c.image)


@pytest.mark.parametrize("seed", range(6))
def test_scene_contents(seed):
    s = scenes.make_scene(seed)
    h, w, ch = s.image.shape
    assert ch == 3 and s.image.dtype == np.uint8
    assert 320 <= h <= 640 and 320 <= w <= 640
    n = len(s.boxes)
    assert 1 <= n <= 8
    assert s.boxes.dtype == np.float32 and s.boxes.shape == (n, 4)
    assert s.classes.dtype == np.int64 and s.classes.shape == (n,)
    assert set(s.classes.tolist()) <= {0, 1, 2, 3}
    x1, y1, x2, y2 = s.boxes.T
    assert (x1 >= 0).all() and (y1 >= 0).all() and (x2 <= w).all() and (y2 <= h).all()
    assert (x2 > x1).all() and (y2 > y1).all()
    ext = np.maximum(x2 - x1, y2 - y1)
    assert (ext >= 12).all() and (ext <= 132).all()


def test_fixed_size():
    s = scenes.make_scene(5, size=(321, 400))
    assert s.image.shape == (321, 400, 3)


def test_split_seeds_disjoint():
    tr = {scenes.scene_seed(0, "train", i) for i in range(1000)}
    va = {scenes.scene_seed(0, "val", i) for i in range(1000)}
    assert not tr & va


def test_write_dataset(tmp_path):
    y = scenes.write_dataset(tmp_path / "ds", n_train=3, n_val=2, seed=1)
    assert y == (tmp_path / "ds" / "data.yaml").resolve() and y.is_file()
    text = y.read_text()
    assert f"path: {(tmp_path / 'ds').resolve()}" in text
    assert "train: images/train" in text and "val: images/val" in text
    for name in scenes.CLASS_NAMES:
        assert name in text
    for split, n in (("train", 3), ("val", 2)):
        imgs = sorted((tmp_path / "ds" / "images" / split).glob("*.jpg"))
        labs = sorted((tmp_path / "ds" / "labels" / split).glob("*.txt"))
        assert len(imgs) == n and len(labs) == n
        assert [p.stem for p in imgs] == [p.stem for p in labs]
        for lab in labs:
            rows = np.loadtxt(lab, ndmin=2)
            assert rows.shape[1] == 5 and 1 <= len(rows) <= 8
            assert set(rows[:, 0].astype(int).tolist()) <= {0, 1, 2, 3}
            assert ((rows[:, 1:] > 0) & (rows[:, 1:] <= 1)).all()
    train_imgs = {p.read_bytes() for p in (tmp_path / "ds" / "images" / "train").glob("*.jpg")}
    val_imgs = {p.read_bytes() for p in (tmp_path / "ds" / "images" / "val").glob("*.jpg")}
    assert not train_imgs & val_imgs
