"""Layer fusion by hand: `gate` keeps the finest layer's detail where the coarser layers agree."""

import pytest
import torch

from yolocam.cam.fusion import FUSIONS, fuse_layer_maps
from yolocam.errors import YolocamError


def test_gate_by_hand():
    # a fine layer (4x4) and a coarse one (2x2); whichever order they come in, the finest grid is the detail
    fine = torch.tensor([[[0.0, 4.0, 0.0, 8.0],
                          [1.0, 2.0, 0.0, 0.0],
                          [0.0, 0.0, -3.0, 0.0],
                          [2.0, 0.0, 0.0, 6.0]]])
    coarse = torch.tensor([[[5.0, 5.0], [5.0, 5.0]]])
    out = fuse_layer_maps([coarse, fine], "gate", (4, 4), [2.0, 1.0], None)
    expect = fine.clamp(min=0) / 8.0  # the coarse map is flat: the gate is the fine map, normalised
    torch.testing.assert_close(out, expect)

    # a coarse map that is zero on the right half switches the fine map's strong right column off
    coarse = torch.tensor([[[2.0, -1.0], [2.0, -1.0]]])
    out = fuse_layer_maps([fine, coarse], "gate", (4, 4), [1.0, 2.0], None)
    up = torch.nn.functional.interpolate(coarse.clamp(min=0)[:, None], size=(4, 4), mode="bilinear",
                                         align_corners=False)[:, 0]
    ref = (fine.clamp(min=0) / 8.0) * (up / up.max())
    ref = ref / ref.max()
    torch.testing.assert_close(out, ref)
    assert out[0, 0, 3] < 0.01 and out[0, 0, 1] == 1.0  # peak moves from the right column to the gated-in cell


def test_gate_with_one_layer_is_that_layer_and_zero_stays_zero():
    m = torch.rand(3, 5, 5)
    torch.testing.assert_close(fuse_layer_maps([m], "gate", (5, 5), [1.0], None), m / m.amax((-2, -1), keepdim=True))
    zero = fuse_layer_maps([torch.zeros(2, 4, 4), torch.rand(2, 2, 2)], "gate", (8, 8), [2.0, 4.0], None)
    assert torch.equal(zero, torch.zeros(2, 8, 8))
    # a job whose coarser maps are all zero (it does not reach them) keeps its fine map, not a zero map
    fine, coarse = torch.rand(2, 4, 4), torch.stack([torch.rand(2, 2), torch.zeros(2, 2)])
    out = fuse_layer_maps([fine, coarse], "gate", (4, 4), [1.0, 2.0], None)
    torch.testing.assert_close(out[1], fine[1] / fine[1].max())
    assert not torch.allclose(out[0], fine[0] / fine[0].max())


def test_unknown_fusion_names_the_known_ones():
    assert "gate" in FUSIONS
    with pytest.raises(YolocamError, match="sum, max, origin, aligned, gate"):
        fuse_layer_maps([torch.rand(1, 2, 2)], "nope", (2, 2), [1.0], None)
