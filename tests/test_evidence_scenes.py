"""Evidence scenes (yolocam.demo.evidence): every geometric rule of the generator, checked on pixels."""

import numpy as np
import pytest

from yolocam.demo import evidence as ev
from yolocam.demo.scenes import scene_seed

SEEDS = range(8)


@pytest.fixture(scope="module")
def scenes():
    return {s: ev.make_evidence_scene(s) for s in SEEDS}


def objects(scene):
    """(tile, mark) of the labelled objects, in label order."""
    return [(t, t.mark) for t in scene.tiles if t.mark is not None]


def row_runs(row: np.ndarray) -> list[int]:
    """Lengths of the runs of True in a 1-D bool array."""
    padded = np.concatenate([[0], row.astype(np.int8), [0]])
    d = np.diff(padded)
    return (np.nonzero(d == -1)[0] - np.nonzero(d == 1)[0]).tolist()


def test_class_names_and_order():
    assert ev.EVIDENCE_CLASSES == ("dot", "ring", "plus")


def test_deterministic_by_seed():
    a, b, c = ev.make_evidence_scene(3), ev.make_evidence_scene(3), ev.make_evidence_scene(4)
    for k in ("image", "boxes", "classes", "mark_centres", "mark_diameters", "mark_masks"):
        assert np.array_equal(getattr(a, k), getattr(b, k)), k
    assert not np.array_equal(a.image, c.image)


@pytest.mark.parametrize("seed", SEEDS)
def test_tiles_and_marks_follow_the_rules(scenes, seed):
    s = scenes[seed]
    assert s.image.shape == (640, 640, 3) and s.image.dtype == np.uint8
    n = len(s.boxes)
    assert 1 <= n <= ev.MAX_OBJECTS
    assert s.boxes.shape == (n, 4) and s.classes.shape == (n,) and s.mark_masks.shape == (n, 640, 640)
    assert s.mark_centres.shape == (n, 2) and s.mark_diameters.shape == (n,)
    assert set(s.classes.tolist()) <= {0, 1, 2}
    for k, (tile, mark) in enumerate(objects(s)):
        x1, y1, x2, y2 = s.boxes[k]
        side = x2 - x1
        assert y2 - y1 == side and 56 <= side <= 128  # square tile, side 56-128 px
        assert x1 >= 0 and y1 >= 0 and x2 <= 640 and y2 <= 640
        # the tile is one uniform colour: its pixels away from the mark stay near the tile colour
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        mx, my = s.mark_centres[k]
        assert abs(abs(mx - cx) - side / 4) < 1e-3 and abs(abs(my - cy) - side / 4) < 1e-3  # a quadrant centre
        d = s.mark_diameters[k]
        assert d == pytest.approx(0.3 * side, abs=1e-3) and d >= 14
        mask = s.mark_masks[k]
        ys, xs = np.nonzero(mask)
        assert xs.min() >= x1 and xs.max() < x2 and ys.min() >= y1 and ys.max() < y2  # on its tile
        assert abs(xs.mean() + 0.5 - mx) < 0.75 and abs(ys.mean() + 0.5 - my) < 0.75  # centred on the mark centre
        for lo, hi in ((xs.min(), xs.max()), (ys.min(), ys.max())):
            assert d - 1.5 <= hi - lo + 1 <= d + 1  # extent = the diameter
        # luminance: the colours differ by >= 80/255, and so do the rendered pixels
        assert abs(ev.luminance(mark.colour) - ev.luminance(tile.colour)) >= 80
        full = ev.mark_coverage((640, 640), mark.cls, mx, my, d) >= 1.0
        tile_px = np.zeros((640, 640), bool)
        tile_px[int(y1):int(y2), int(x1):int(x2)] = True
        near = np.zeros_like(tile_px)
        near[int(my - d):int(my + d), int(mx - d):int(mx + d)] = True
        luma = ev.luminance(s.image)
        assert abs(np.median(luma[full]) - np.median(luma[tile_px & ~near])) >= 75
        assert luma[tile_px & ~near].std() < 8  # uniform tile (mild noise only)


def test_mark_shapes():
    """dot: filled disc; ring: outline of thickness d/6; plus: '+' spanning d with arms d/5 thick."""
    seen = set()
    for seed in range(40):
        s = ev.make_evidence_scene(seed, size=(320, 320))
        for k, c in enumerate(s.classes.tolist()):
            seen.add(c)
            mask, (mx, my), d = s.mark_masks[k], s.mark_centres[k], float(s.mark_diameters[k])
            r = d / 2
            area = ev.mark_coverage((320, 320), c, mx, my, d).sum()  # exact area (the mask is it, to the pixel)
            ci, cj = int(my), int(mx)  # the pixel holding the centre
            if c == 0:
                assert mask[ci, cj]
                assert area == pytest.approx(np.pi * r * r, rel=0.02)
            elif c == 1:
                t = d / 6
                assert not mask[ci, cj]  # a hole in the middle
                assert area == pytest.approx(np.pi * (r * r - (r - t) ** 2), rel=0.05)
                runs = row_runs(mask[ci])
                assert len(runs) == 2 and all(abs(v - t) <= 1.5 for v in runs)
            else:
                t = d / 5
                assert mask[ci, cj]
                assert area == pytest.approx(2 * d * t - t * t, rel=0.05)
                assert abs(max(row_runs(mask[ci])) - d) <= 1.5  # the horizontal bar spans the diameter
                assert abs(max(row_runs(mask[:, int(mx + r - 2)])) - t) <= 1.5  # arm thickness at its end
                assert not mask[int(my + d / 3), int(mx + d / 3)]  # nothing in the corners
    assert seen == {0, 1, 2}


@pytest.mark.parametrize("seed", SEEDS)
def test_unlabelled_distractors(scenes, seed):
    s = scenes[seed]
    plain = s.plain_boxes
    assert len(plain) >= 1 and len(s.lone_marks) >= 1  # both kinds in every scene
    sides = plain[:, 2] - plain[:, 0]
    assert ((sides >= 56) & (sides <= 128)).all() and np.array_equal(sides, plain[:, 3] - plain[:, 1])
    tiles = np.concatenate([s.boxes, plain])
    for i in range(len(tiles)):  # no two tiles touch
        for j in range(i + 1, len(tiles)):
            a, b = tiles[i], tiles[j]
            assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]
    luma = ev.luminance(s.image)
    for x1, y1, x2, y2 in plain.astype(int):  # a plain tile carries no mark
        assert luma[y1:y2, x1:x2].std() < 8
    for m in s.lone_marks:  # lone marks: 17-40 px, on the background, off every tile
        assert 17 <= m.diameter <= 40
        r = m.diameter / 2
        for x1, y1, x2, y2 in tiles:
            assert m.cx + r <= x1 or m.cx - r >= x2 or m.cy + r <= y1 or m.cy - r >= y2
        mask = ev.mark_mask((640, 640), m.cls, m.cx, m.cy, m.diameter)
        assert mask.sum() > 0


def test_quadrants_and_classes_all_occur():
    quadrants, classes = set(), set()
    for seed in range(12):
        s = ev.make_evidence_scene(seed)
        centre = (s.boxes[:, :2] + s.boxes[:, 2:]) / 2
        quadrants |= {tuple(q) for q in np.sign(s.mark_centres - centre).astype(int).tolist()}
        classes |= set(s.classes.tolist())
    assert quadrants == {(-1, -1), (-1, 1), (1, -1), (1, 1)} and classes == {0, 1, 2}


def test_edits_erase_or_swap_one_mark_and_nothing_else():
    s = ev.make_evidence_scene(0)
    assert len(s.boxes) >= 2
    erased = ev.make_evidence_scene(0, edits={1: None})
    keep = [0] + list(range(2, len(s.boxes)))
    assert np.array_equal(erased.boxes, s.boxes[keep]) and np.array_equal(erased.classes, s.classes[keep])
    assert any(np.array_equal(b, s.boxes[1]) for b in erased.plain_boxes)  # the tile stays, unlabelled
    (mx, my), d = s.mark_centres[1], s.mark_diameters[1]
    region = np.zeros((640, 640), bool)
    region[int(my - d / 2 - 2):int(my + d / 2 + 3), int(mx - d / 2 - 2):int(mx + d / 2 + 3)] = True
    assert np.array_equal(erased.image[~region], s.image[~region])
    x1, y1, x2, y2 = s.boxes[1].astype(int)
    assert ev.luminance(erased.image[y1:y2, x1:x2]).std() < 8  # now a plain tile

    new = (int(s.classes[1]) + 1) % 3
    swapped = ev.make_evidence_scene(0, edits={1: new})
    assert swapped.classes[1] == new and np.array_equal(np.delete(swapped.classes, 1), np.delete(s.classes, 1))
    assert np.array_equal(swapped.boxes, s.boxes) and np.array_equal(swapped.mark_centres, s.mark_centres)
    assert np.array_equal(swapped.image[~region], s.image[~region])
    assert not np.array_equal(swapped.mark_masks[1], s.mark_masks[1])
    with pytest.raises(IndexError):
        ev.make_evidence_scene(0, edits={99: None})


def test_other_sizes():
    assert ev.make_evidence_scene(1, size=(256, 320)).image.shape == (256, 320, 3)
    with pytest.raises(ValueError):
        ev.make_evidence_scene(1, size=(100, 640))


def test_write_evidence_dataset(tmp_path):
    y = ev.write_evidence_dataset(tmp_path / "ds", n_train=2, n_val=1, seed=5)
    text = y.read_text()
    assert "train: images/train" in text and "val: images/val" in text
    assert "0: dot" in text and "1: ring" in text and "2: plus" in text
    for split, n in (("train", 2), ("val", 1)):
        for i in range(n):
            name = f"{split}_5_{i:06d}"
            scene = ev.make_evidence_scene(scene_seed(5, split, i))
            assert (tmp_path / "ds" / "images" / split / f"{name}.jpg").is_file()
            rows = np.loadtxt(tmp_path / "ds" / "labels" / split / f"{name}.txt", ndmin=2)
            assert np.array_equal(rows[:, 0].astype(int), scene.classes)
            assert np.allclose(rows[:, 1:3] * 640, (scene.boxes[:, :2] + scene.boxes[:, 2:]) / 2, atol=1e-3)
            lab = ev.load_evidence_labels(tmp_path / "ds" / "marks" / split / f"{name}.npz")
            assert np.array_equal(lab["mark_masks"], scene.mark_masks)
            assert np.array_equal(lab["boxes"], scene.boxes) and np.array_equal(lab["classes"], scene.classes)
            assert np.allclose(lab["mark_centres"], scene.mark_centres)
            assert np.allclose(lab["mark_diameters"], scene.mark_diameters)


def test_module_is_torch_free():
    import subprocess
    import sys

    code = "import sys, yolocam.demo.evidence; assert 'torch' not in sys.modules; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "ok", out.stderr
