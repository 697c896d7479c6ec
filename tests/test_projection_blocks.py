"""Block-wise resizing of maps that are zero outside a small block (a box's window): `Projector.one` equals
the dense product `Ry @ m @ Rx.T` for small blocks, large ones, all-zero and signed maps, in input space and
through a letterbox (float64 reference)."""

import torch

from yolocam.cam.projection import Projector
from yolocam.inputs.images import Letterbox


def _maps(grid, generator):
    h, w = grid
    out = torch.zeros((7, h, w))
    blocks = [(0, 3, 0, 4), (h - 4, h, w - 5, w), (5, 9, 7, 12), (0, h, 0, w), (2, h - 1, 1, w - 2), None, (6, 7, 3, 4)]
    for k, b in enumerate(blocks):
        if b is not None:
            y0, y1, x0, x1 = b
            out[k, y0:y1, x0:x1] = torch.randn((y1 - y0, x1 - x0), generator=generator)
    out[2].clamp_(min=0)  # one non-negative map, the others signed
    return out


def _dense(proj: Projector, maps: torch.Tensor) -> torch.Tensor:
    ry, rx = (m.double() for m in proj.matrices(tuple(maps.shape[-2:])))
    return ry @ maps.double() @ rx.T


def test_block_products_equal_the_dense_product():
    g = torch.Generator().manual_seed(3)
    for size, lb in [((96, 128), None), ((96, 128), Letterbox((150, 250), (96, 128), (128, 77), 10, 0))]:
        proj = Projector(size, lb, "cpu")
        maps = _maps((24, 32), g)
        got = proj.one(maps)
        want = _dense(proj, maps)
        assert got.shape == want.shape == (7, *proj.out_size)
        assert float((got.double() - want).abs().max()) < 1e-5
        assert float(got[5].abs().max()) == 0.0  # the all-zero map stays exactly zero
        small = want[0].abs() > 0  # a small block: exactly zero where its weights do not reach
        assert bool((got[0][~small] == 0).all())


def test_block_products_with_out_and_only_dense_maps():
    """Into a given `out` (the gate fusion's chunks), and with every map dense (the banded path alone)."""
    g = torch.Generator().manual_seed(4)
    proj = Projector((64, 64), None, "cpu")
    maps = _maps((16, 16), g)
    out = torch.full((7, 64, 64), float("nan"))
    proj.one(maps, out=out)
    assert float((out.double() - _dense(proj, maps)).abs().max()) < 1e-5
    dense = torch.randn((3, 16, 16), generator=g)
    assert float((proj.one(dense).double() - _dense(proj, dense)).abs().max()) < 1e-5


def test_into_zeros_scaled_to_unit():
    """`one(out=zeros(n), zeroed=True, unit=True)` (the gate fusion's call): each non-negative map resized and
    divided by its maximum, all-zero maps left zero."""
    g = torch.Generator().manual_seed(5)
    proj = Projector((96, 128), Letterbox((150, 250), (96, 128), (128, 77), 10, 0), "cpu")
    maps = _maps((24, 32), g).clamp(min=0)
    out = proj.zeros(len(maps))
    assert out.shape == (7, *proj.out_size) and float(out.abs().max()) == 0.0
    proj.one(maps, out=out, zeroed=True, unit=True)
    want = _dense(proj, maps)
    peak = want.amax((-2, -1), keepdim=True)
    want = torch.where(peak > 0, want / peak.clamp(min=1e-30), want)
    assert float((out.double() - want).abs().max()) < 1e-5
    assert float(out[5].abs().max()) == 0.0
    assert all(abs(float(out[k].max()) - 1.0) < 1e-6 for k in range(7) if k != 5 and float(want[k].max()) > 0)
