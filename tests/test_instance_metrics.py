"""Instance-region metrics (yolocam.evaluation.instance_metrics) by hand."""

import math

import numpy as np
import pytest
import torch

from yolocam.errors import YolocamError
from yolocam.evaluation import instance_metrics as im


def test_rbox_mask_axis_aligned_and_turned():
    m = im.rbox_mask((10, 12), (6.0, 5.0, 4.0, 2.0, 0.0))  # x in [4, 8], y in [4, 6]: centres 4.5..7.5, 4.5..5.5
    expect = np.zeros((10, 12), bool)
    expect[4:6, 4:8] = True
    assert np.array_equal(m.numpy(), expect)
    turned = im.rbox_mask((10, 12), (6.0, 5.0, 4.0, 2.0, math.pi / 2))  # now 2 wide, 4 tall
    expect = np.zeros((10, 12), bool)
    expect[3:7, 5:7] = True
    assert np.array_equal(turned.numpy(), expect)
    diamond = im.rbox_mask((9, 9), (4.5, 4.5, 4.0, 4.0, math.pi / 4))  # a square turned 45 deg: |dx|+|dy| <= 2*sqrt2
    ys, xs = np.mgrid[0:9, 0:9] + 0.5
    assert np.array_equal(diamond.numpy(), np.abs(xs - 4.5) + np.abs(ys - 4.5) <= 2 * math.sqrt(2) + 1e-9)


def test_pointing_and_energy_in_mask_by_hand():
    h = torch.zeros(4, 4)
    h[1, 1], h[2, 2], h[3, 3] = 3.0, 3.0, 2.0
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[1, 1] = True
    assert im.pointing_in_mask(h, mask) == 0.5  # two tied maxima, one inside
    assert im.energy_in_mask(h, mask) == pytest.approx(3 / 8)
    mask[2:, 2:] = True
    assert im.pointing_in_mask(h, mask) == 1.0 and im.energy_in_mask(h, mask) == 1.0
    assert im.pointing_in_mask(np.zeros((4, 4)), mask) == 0.0 and im.energy_in_mask(np.zeros((4, 4)), mask) == 0.0
    neg = -h
    neg[0, 0] = float("nan")
    assert im.energy_in_mask(neg, mask) == 0.0  # negative and NaN heat counts as nothing


def test_peak_distance_by_hand():
    h = np.zeros((10, 10), np.float32)
    h[2, 3] = 1.0  # pixel centre (3.5, 2.5)
    assert im.peak_distance(h, (6.5, 6.5)) == pytest.approx(5.0)
    h[2, 5] = 1.0  # tie: mean position (4.5, 2.5)
    assert im.peak_distance(h, (4.5, 2.5)) == pytest.approx(0.0)
    assert im.peak_distance(np.zeros((3, 3)), (0, 0)) == math.inf


def test_bad_inputs_name_the_problem():
    with pytest.raises(YolocamError, match=r"expected shape \(4, 4\)"):
        im.energy_in_mask(np.ones((4, 4)), np.ones((3, 4), bool))
    with pytest.raises(YolocamError, match="5 numbers"):
        im.rbox_mask((4, 4), (1, 2, 3, 4))
    with pytest.raises(YolocamError, match=r"\(H, W\)"):
        im.peak_distance(np.ones((2, 4, 4)), (0, 0))
