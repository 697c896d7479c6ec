"""Property: whatever array or small file a user hands over, the image loader and `explain` either give a
result or raise `YolocamError` — never another exception."""

from __future__ import annotations

import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import yolocam
from yolocam.errors import YolocamError
from yolocam.inputs.images import IMAGE_SUFFIXES, load_image, to_bgr_uint8

SETTINGS = dict(deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

DTYPES = [np.uint8, np.uint16, np.int8, np.int16, np.int32, np.int64, np.uint32, np.uint64,
          np.float16, np.float32, np.float64, np.bool_, np.complex64]


@st.composite
def image_arrays(draw, max_side: int = 48):
    """Arrays that hold an image under the loader's rules (or just miss them: uint16 holding 0..255)."""
    dtype = np.dtype(draw(st.sampled_from([np.uint8, np.uint16, np.float32, np.float64, np.int64])))
    h, w = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    shape = draw(st.sampled_from([(h, w), (h, w, 1), (h, w, 3), (h, w, 4)]))
    hi = {"u": 255 if dtype == np.uint8 else draw(st.sampled_from([255, 65535])), "i": 255,
          "f": draw(st.sampled_from([1.0, 255.0]))}[dtype.kind]
    values = np.random.default_rng(draw(st.integers(0, 2**16))).random(shape) * hi
    return values.astype(dtype) if dtype.kind == "f" else np.rint(values).astype(dtype)


@st.composite
def any_arrays(draw, max_side: int = 48):
    """Arrays of many dtypes and shapes, values over the dtype's range, in 0..1, 0..255 or 0..65504, with
    NaN and infinity for floats."""
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    side = st.integers(0, max_side) if draw(st.booleans()) else st.integers(1, max_side)
    shape = draw(st.one_of(
        st.tuples(side, side, st.sampled_from([1, 3, 4])),
        st.tuples(side, side),
        hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6),
    ))
    if dtype.kind == "f":
        hi = draw(st.sampled_from([1.0, 255.0, 65504.0, None]))  # 65504: float16's largest
        elements = (st.floats(0.0, hi, width=dtype.itemsize * 8) if hi is not None
                    else st.floats(width=dtype.itemsize * 8, allow_nan=True, allow_infinity=True))
        if draw(st.booleans()):
            return draw(hnp.arrays(dtype, shape, elements=elements))
        fill = draw(elements)
        return np.full(shape, fill, dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        hi = draw(st.sampled_from([min(255, info.max), info.max]))
        lo = draw(st.sampled_from([0, info.min]))
        return draw(hnp.arrays(dtype, shape, elements=st.integers(lo, hi)))
    return draw(hnp.arrays(dtype, shape))


def arrays(max_side: int = 48):
    return st.one_of(image_arrays(max_side), any_arrays(max_side))


def expected_image(array: np.ndarray) -> np.ndarray | None:
    """The loader's documented rules (`to_bgr_uint8`), written out again: the BGR uint8 image an array must
    become, or None where it must be refused."""
    a = array[:, :, None] if array.ndim == 2 else array
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4) or a.shape[0] < 1 or a.shape[1] < 1:
        return None
    kind = a.dtype.kind
    if a.dtype == np.uint8:
        out = a
    elif kind == "f":
        v = a.astype(np.float64)
        if not np.isfinite(v).all() or v.min() < 0 or v.max() > 255:
            return None
        out = np.rint(v * (255.0 if v.max() <= 1.0 else 1.0)).astype(np.uint8)
    elif a.dtype == np.uint16:
        if 0 < int(a.max()) <= 255:  # 8-bit data in a 16-bit array: refused, it would come out black
            return None
        out = (a >> 8).astype(np.uint8)
    elif kind in "iu":
        if int(a.min()) < 0 or int(a.max()) > 255:
            return None
        out = a.astype(np.uint8)
    else:  # bool, complex
        return None
    return np.repeat(out, 3, axis=2) if out.shape[2] == 1 else out[:, :, :3]


@pytest.fixture(scope="module")
def explainer(v8_model):
    return yolocam.Explainer(v8_model, imgsz=64)


def check_result(results, n: int = 1) -> None:
    assert isinstance(results, list) and len(results) == n
    for r in results:
        assert r.error is None
        h, w = r.image.shape[:2]
        assert r.image.dtype == np.uint8 and r.image.shape == (h, w, 3)
        for d in r.detections:
            assert d.heatmap.shape == (h, w) and np.isfinite(d.heatmap).all()
            assert 0.0 <= d.heatmap.min() and d.heatmap.max() <= 1.0


@settings(max_examples=60, **SETTINGS)
@given(arrays())
def test_loader_converts_or_refuses_any_array(array):
    """Converted exactly when the rules say so, to the image they say (a loader refusing everything fails)."""
    expected = expected_image(array)
    try:
        out = to_bgr_uint8(array)
    except YolocamError:
        event("refused")
        assert expected is None, f"a valid {array.dtype} {array.shape} array was refused"
        return
    event("converted")
    assert expected is not None, f"a {array.dtype} {array.shape} array the rules refuse was converted"
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3 and out.flags.c_contiguous
    assert out.shape[:2] == array.shape[:2]
    # float32 arithmetic may round an exact .5 the other way than float64 does
    assert np.abs(out.astype(int) - expected.astype(int)).max(initial=0) <= 1


@settings(max_examples=40, **SETTINGS)
@given(image_arrays())
def test_every_array_valid_by_construction_is_converted(array):
    if array.dtype == np.uint16 and 0 < int(array.max()) <= 255:
        return  # the one documented refusal among these (8-bit data in a 16-bit array)
    out = to_bgr_uint8(array)
    assert out.shape == (*array.shape[:2], 3)
    np.testing.assert_allclose(out, expected_image(array), atol=1)


@settings(max_examples=30, **SETTINGS)
@given(arrays(max_side=40))
def test_explain_gives_a_result_or_a_yolocam_error_for_any_array(explainer, array):
    try:
        results = explainer.explain(array, conf=0.3, max_det=2)
    except YolocamError:
        event("refused")
        assert expected_image(array) is None, f"a valid {array.dtype} {array.shape} array was refused"
        return
    event("explained")
    check_result(results)


@st.composite
def small_files(draw):
    """(suffix, bytes, valid): random bytes, a real image cut short or with bytes flipped, or a real image
    (valid: True for a real image under its own format's suffix)."""
    suffix = draw(st.sampled_from(list(IMAGE_SUFFIXES) + [".txt", ""]))
    kind = draw(st.sampled_from(["random", "truncated", "flipped", "valid"]))
    if kind == "random":
        return suffix, draw(st.binary(max_size=512)), False
    fmt = draw(st.sampled_from([".png", ".jpg", ".bmp", ".tif", ".webp"]))
    h, w = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    seed = draw(st.integers(0, 2**16))
    image = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(fmt, image)
    data = bytearray(buf.tobytes()) if ok else bytearray()
    if kind == "truncated" and data:
        data = data[:draw(st.integers(0, len(data) - 1))]
    elif kind == "flipped" and data:
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(data) - 1))
            data[i] = draw(st.integers(0, 255))
    name = draw(st.sampled_from([fmt, suffix]))
    return name, bytes(data), kind == "valid" and name == fmt and ok


@settings(max_examples=40, **SETTINGS)
@given(small_files())
def test_loader_and_explain_on_any_small_file(explainer, file):
    suffix, data, valid = file
    event("valid file" if valid else "other file")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"f{suffix}"
        path.write_bytes(data)
        try:
            image = load_image(path)
        except YolocamError:
            assert not valid, f"a valid {suffix} file was refused"
            image = None
        else:
            assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        try:
            results = explainer.explain(str(path), conf=0.3, max_det=2)
        except YolocamError:
            assert image is None  # a file the loader reads is explained
            event("refused")
            return
        event("explained")
        check_result(results)
        # a folder holding it: one result, maybe with its error, never an exception
        results = explainer.explain(tmp, conf=0.3, max_det=2) if suffix.lower() in IMAGE_SUFFIXES else None
        if results is not None:
            assert len(results) == 1
