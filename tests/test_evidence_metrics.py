"""Evidence metrics (yolocam.metrics.evidence_pointing / evidence_share) and the box-only baselines.

Reference values are worked out by hand on tiny arrays (pixel (i, j) has its centre at (j + .5, i + .5)).
"""

import math

import numpy as np
import pytest
import torch

from yolocam import metrics
from yolocam.errors import YolocamError
from yolocam.evaluation import evidence as E


def cells(mask) -> set[tuple[int, int]]:
    return {tuple(v) for v in torch.nonzero(torch.as_tensor(mask)).tolist()}


def test_reexported_from_metrics():
    for name in ("evidence_pointing", "evidence_share", "evidence_region", "evidence_scores", "gaussian_box_map",
                 "uniform_box_map"):
        assert getattr(metrics, name) is getattr(E, name)


def test_disc_region_by_hand():
    # disc at the centre of pixel (2, 2), diameter 2: radius 1 -> the pixel and its 4 neighbours
    assert cells(E.evidence_region((5, 5), (2.5, 2.5, 2.0), dilate=1.0)) == {(2, 2), (1, 2), (3, 2), (2, 1), (2, 3)}
    # dilated 1.5x: radius 1.5 also takes the diagonals (distance sqrt(2) = 1.41), not (0, 2) (distance 2)
    assert cells(E.evidence_region((5, 5), (2.5, 2.5, 2.0))) == {(i, j) for i in (1, 2, 3) for j in (1, 2, 3)}
    assert cells(E.evidence_region((5, 5), {"centre": (2.5, 2.5), "diameter": 2.0}, dilate=1.0)) == \
        cells(E.disc_mask((5, 5), (2.5, 2.5), 2.0))


def test_mask_region_by_hand():
    bar = np.zeros((5, 5), bool)
    bar[2, 1:4] = True  # extent 3
    assert cells(E.evidence_region((5, 5), bar, dilate=1.0)) == cells(bar)
    # dilate 5/3: grow by (5/3 - 1) * 3 / 2 = 1 px -> 4-neighbours (distance 1), not diagonals (1.41)
    grown = E.evidence_region((5, 5), bar, dilate=5 / 3)
    assert cells(grown) == cells(bar) | {(2, 0), (2, 4), (1, 1), (1, 2), (1, 3), (3, 1), (3, 2), (3, 3)}
    assert int(grown.sum()) == 11
    # a 3x3 block dilated 2x grows by 1.5 px: 4-neighbours and diagonals -> the 5x5 block
    block = np.zeros((7, 7), np.float32)
    block[2:5, 2:5] = 1.0
    assert cells(E.evidence_region((7, 7), block, dilate=2.0)) == {(i, j) for i in range(1, 6) for j in range(1, 6)}
    # the default 1.5x of a 3x3 block grows by 0.75 px: no pixel centre is that close -> unchanged
    assert cells(E.evidence_region((7, 7), block)) == cells(block)
    assert not E.evidence_region((4, 4), np.zeros((4, 4))).any()


def test_mask_dilation_of_a_disc_is_the_dilated_disc():
    shape, centre, d = (64, 64), (30.5, 33.5), 20.0
    from_mask = E.evidence_region(shape, E.disc_mask(shape, centre, d), dilate=1.5)
    from_disc = E.evidence_region(shape, (*centre, d), dilate=1.5)
    assert (from_mask ^ from_disc).sum() <= 0.02 * from_disc.sum()


def test_evidence_pointing_by_hand():
    h = np.zeros((4, 4), np.float32)
    h[1, 2] = 1.0
    h[3, 0] = 0.5
    assert E.evidence_pointing(h, (2.5, 1.5, 1.0)) == 1.0  # the peak's own pixel
    assert E.evidence_pointing(h, (0.5, 3.5, 1.0)) == 0.0  # the second-highest pixel only
    mask = np.zeros((4, 4), bool)
    mask[1, 2] = True
    assert E.evidence_pointing(torch.as_tensor(h), mask) == 1.0
    assert E.evidence_pointing(np.zeros((4, 4)), mask) == 0.0  # all-zero map: no hit
    h[3, 3] = 1.0  # two equal maxima, one inside: a random tie-break hits half the time
    assert E.evidence_pointing(h, mask) == 0.5
    flat = np.ones((4, 4))
    assert E.evidence_pointing(flat, mask) == 1 / 16  # a flat map gets its region's share, not a free hit
    nan = np.full((4, 4), np.nan)
    nan[1, 2] = 0.3
    assert E.evidence_pointing(nan, mask) == 1.0  # NaN counts as no heat


def test_evidence_share_by_hand():
    h = np.arange(16, dtype=np.float32).reshape(4, 4)
    top = [0, 0, 4, 2]  # the top two rows: 0 + 1 + ... + 7 = 28
    one = np.zeros((4, 4), bool)
    one[1, 2] = True  # value 6
    assert E.evidence_share(h, one, top) == pytest.approx(6 / 28)
    assert E.evidence_share(h, one, top, dilate=1.0) == pytest.approx(6 / 28)
    # a disc of radius 1 on pixel (1, 2): itself (6), (0, 2) = 2, (1, 1) = 5, (1, 3) = 7; (2, 2) is off the box
    assert E.evidence_share(h, (2.5, 1.5, 2.0), top, dilate=1.0) == pytest.approx((6 + 2 + 5 + 7) / 28)
    outside = np.zeros((4, 4), bool)
    outside[3, 3] = True
    assert E.evidence_share(h, outside, top) == 0.0  # evidence outside the box counts nothing
    assert E.evidence_share(np.zeros((4, 4)), one, top) == 0.0  # no energy in the box
    neg = -h
    neg[1, 2] = 2.0
    assert E.evidence_share(neg, one, top) == 1.0  # negative heat counts as 0


def test_evidence_scores_for_many_detections():
    h = np.zeros((2, 4, 4), np.float32)
    h[0, 1, 2], h[0, 0, 0] = 1.0, 1.0  # map 0: two maxima, one on the evidence; box energy 2, evidence 1
    h[1, 3, 3] = 1.0  # map 1: off the evidence
    one = np.zeros((4, 4), bool)
    one[1, 2] = True
    p, s = E.evidence_scores(h, [[0, 0, 4, 4], [0, 0, 4, 4]], [one, (2.5, 1.5, 1.0)], dilate=1.0)
    assert p.tolist() == [0.5, 0.0] and s.tolist() == [0.5, 0.0]
    p, s = E.evidence_scores(h[:1], [[0, 0, 4, 4]], [None])
    assert math.isnan(p[0]) and math.isnan(s[0])
    with pytest.raises(YolocamError):
        E.evidence_scores(h, [[0, 0, 4, 4]], [one, one])


def test_baselines_by_hand():
    u = E.uniform_box_map((4, 6), [1, 1, 4, 3])
    assert u.dtype == torch.float32 and cells(u) == {(i, j) for i in (1, 2) for j in (1, 2, 3)}
    g = E.gaussian_box_map((5, 5), [0, 0, 5, 5], sigma=0.25)  # centre (2.5, 2.5), sigma 1.25 px
    assert g[2, 2] == pytest.approx(1.0)
    assert g[2, 3] == pytest.approx(math.exp(-1 / (2 * 1.25 ** 2)))
    assert g[0, 0] == pytest.approx(math.exp(-2 * 4 / (2 * 1.25 ** 2)))
    assert torch.allclose(g, g.T) and torch.allclose(g, g.flip(0))
    # a uniform box's share is the region's area share: a 2-px disc region (4 pixels) in an 8-pixel box
    ev = np.zeros((4, 6), bool)
    ev[1:3, 1:3] = True
    wide = [1, 1, 5, 3]
    assert E.evidence_share(E.uniform_box_map((4, 6), wide), ev, wide, dilate=1.0) == pytest.approx(4 / 8)


def test_baselines_on_an_evidence_scene():
    """The box-only maps never point at an off-centre mark; a uniform box scores the disc's area share."""
    from yolocam.demo.evidence import make_evidence_scene

    s = make_evidence_scene(2)
    for box, c, d in zip(s.boxes, s.mark_centres, s.mark_diameters):
        side = float(box[2] - box[0])
        g = E.gaussian_box_map((640, 640), box)
        u = E.uniform_box_map((640, 640), box)
        assert E.evidence_pointing(g, (*c, d)) == 0.0  # the peak is at the tile's centre, 0.35 side from the mark
        share = E.evidence_share(u, (*c, d), box)
        assert share == pytest.approx(math.pi * (0.225 * side) ** 2 / side ** 2, rel=0.08)
        assert 0.0 < E.evidence_share(g, (*c, d), box) < 0.3


def test_bad_inputs():
    with pytest.raises(YolocamError):
        E.evidence_share(np.zeros((2, 2, 2)), (0, 0, 1), [0, 0, 1, 1])
    with pytest.raises(YolocamError):
        E.evidence_pointing(np.zeros((4, 4)), np.zeros((3, 3)))  # mask of another size
    with pytest.raises(YolocamError):
        E.evidence_pointing(np.zeros((4, 4)), (1, 1, 1), dilate=0.5)
    with pytest.raises(YolocamError):
        E.evidence_share(np.zeros((4, 4)), (1, 1, 1), [0, 0, 1])
