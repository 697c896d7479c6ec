"""`yolocam export-demo`: a bundled model exported by ultralytics' exporter, offline, ready for `--model X.onnx`."""

from __future__ import annotations

import importlib.util

import pytest

from yolocam.cli import main


def test_export_demo_writes_an_onnx_model_and_refuses_to_overwrite(tmp_path, capsys):
    pytest.importorskip("onnx")  # in the test extra
    import onnx

    out = tmp_path / "models"
    assert main(["export-demo", "demo-v8", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    target = out / "demo-v8.onnx"
    assert f"-> {target}" in stdout and f"--model {target} --method drise" in stdout
    assert sorted(p.name for p in out.iterdir()) == ["demo-v8.onnx"]  # no copy of the weights, no temporaries
    graph = onnx.load(str(target)).graph
    shape = graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in shape][1] == 3 and not shape[2].dim_value  # dynamic height
    assert main(["export-demo", "demo-v8", "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"yolocam: error: {target} already exists; pass --exist-ok to replace it or choose another --out"]


def test_export_demo_without_onnx_is_one_line(tmp_path, capsys, monkeypatch):
    import yolocam.cli.export_command as command

    real = importlib.util.find_spec
    monkeypatch.setattr(command.importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else real(name, *a))
    assert main(["export-demo", "--out", str(tmp_path / "m")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "yolocam: error: --format onnx needs the Python package 'onnx', which is not installed (pip install "
        '"yolocam[onnx]"); yolocam never installs packages itself']
    assert not (tmp_path / "m").exists()
    assert main(["export-demo", "nosuch"]) == 2  # argparse: the bundled names only
