"""`yolocam bench`'s x (exact=True) and f (preset fast) variants: timed beside the default on the same boxes,
with their ratios, and shown only when asked for."""

import pytest

from yolocam.cli import main
from yolocam.cli.bench import format_table, run_bench
from yolocam.errors import YolocamError


@pytest.fixture(scope="module")
def rows():
    return run_bench(imgsz=96, boxes=[3], repeats=1, warmup=0, variants="abxf", image="scene")


def test_exact_and_fast_variants_are_timed_with_their_ratios(rows):
    r = rows[0]
    for v in "abxf":
        assert r[f"{v}_s"] is not None and r[f"{v}_s"] > 0, v
    assert r["x_over_b"] == pytest.approx(r["x_s"] / r["b_s"])
    assert r["f_over_a"] == pytest.approx(r["f_s"] / r["a_s"])
    table = format_table(rows)
    assert " x/b " in table and " f/a " in table
    assert "x: yolocam Explainer(exact=True)" in table and "f: yolocam Explainer(preset='fast')" in table


def test_optional_columns_only_when_asked_for():
    table = format_table(run_bench(imgsz=96, boxes=[2], repeats=1, warmup=0, variants="b", image="scene"))
    assert "x/b" not in table and "f/a" not in table and " b/a " in table


def test_unknown_variant_names_the_known_ones(capsys):
    with pytest.raises(YolocamError, match="abcdexf"):
        run_bench(imgsz=96, boxes=[2], repeats=1, warmup=0, variants="bz")
    assert main(["bench", "--imgsz", "96", "--boxes", "2", "--variants", "bz"]) == 2
    assert "abcdexf" in capsys.readouterr().err
