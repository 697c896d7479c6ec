"""Output folders: a taken --out is refused, --exist-ok reuses it removing only what yolocam wrote
there, killed runs' temporary files are cleaned, failed runs leave no finished-looking manifest."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import pytest

from yolocam.cli import main
from yolocam.demo.scenes import make_scene
from yolocam.output import export as export_mod
from yolocam.output.cleanup import clear_previous, folder_in_use
from yolocam.output.export import ExportWriter

from test_export import make_result

ARGS = ["--model", "demo-v8", "--imgsz", "96", "--conf", "0.01", "--max-det", "3"]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("imgs")
    for i in range(2):
        cv2.imwrite(str(folder / f"scene{i}.png"), make_scene(i, size=(96, 120)).image)
    return folder


def run(argv, capsys):
    rc = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def files_under(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def listed(folder: Path) -> set[str]:
    m = json.loads((folder / "manifest.json").read_text())
    rels = {"manifest.json", *m.get("files", [])}
    for img in m["images"]:
        rels.add(img["heatmaps"])
        for d in img["detections"]:
            rels.update(v for k, v in d.items() if k in ("overlay", "crop"))
    return rels


def test_taken_out_is_refused_and_left_alone(tmp_path, images, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    rc, _, err = run(["explain", images, *ARGS, "--out", out], capsys)
    assert rc == 2 and "--exist-ok" in err and "already exists" in err
    assert files_under(out) == {"notes.txt"}
    (tmp_path / "file").write_text("x")
    rc, _, err = run(["explain", images, *ARGS, "--out", tmp_path / "file"], capsys)
    assert rc == 2 and "not a folder" in err


def test_empty_existing_out_is_used(tmp_path, images, capsys):
    out = tmp_path / "empty"
    out.mkdir()
    rc, _, err = run(["explain", images, *ARGS, "--out", out], capsys)
    assert rc == 0, err
    assert json.loads((out / "manifest.json").read_text())["complete"] is True


def test_exist_ok_removes_only_the_previous_runs_files(tmp_path, images, capsys):
    out = tmp_path / "out"
    rc, _, err = run(["explain", images, *ARGS, "--out", out, "--html", "--crops"], capsys)
    assert rc == 0, err
    first = listed(out)
    assert "index.html" in first and any("/crops/" in f for f in first) and len(first) > 6
    assert files_under(out) == first
    (out / "notes.txt").write_text("mine")                # the user's files stay
    (out / "scene0" / "mine.txt").write_text("mine")      # also inside a folder yolocam made
    (out / "scene1" / ".000_x.png.tmp999999999-1").write_bytes(b"killed run")  # a dead run's temporary file

    rc, _, err = run(["explain", images / "scene1.png", *ARGS[:4], "--conf", "0.5", "--max-det", "1",
                      "--out", out, "--exist-ok"], capsys)
    assert rc == 0, err
    second = listed(out)
    assert "index.html" not in second  # no --html this time: the old gallery is gone
    assert files_under(out) == second | {"notes.txt", "scene0/mine.txt"}
    assert not (out / "scene0" / "crops").exists()  # folders emptied by the removal are removed
    assert not (out / "scene1" / "crops").exists()


def test_exist_ok_without_out_reuses_the_base_run_folder(tmp_path, images, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        rc, _, err = run(["explain", images / "scene0.png", *ARGS, "--exist-ok"], capsys)
        assert rc == 0, err
    assert sorted(p.name for p in (tmp_path / "runs" / "yolocam").iterdir()) == ["explain"]
    rc, _, err = run(["explain", images / "scene0.png", *ARGS], capsys)
    assert rc == 0 and (tmp_path / "runs" / "yolocam" / "explain2" / "manifest.json").is_file()


def test_killed_run_is_cleaned_by_the_next_run(tmp_path):
    """A run killed while writing an image: its manifest lists those files as pending; temporary
    files of dead processes are removed; the user's files and live processes' files are not."""
    out = tmp_path / "out"
    writer = ExportWriter(out, crops=True)
    writer.add(make_result(1, 2, path="a.png"))
    real = export_mod.encode_png
    calls = []

    def dies(image):
        calls.append(1)
        if len(calls) > 1:
            raise KeyboardInterrupt  # stands for SIGKILL: nothing after this runs
        return real(image)

    export_mod.encode_png = dies
    try:
        with pytest.raises(KeyboardInterrupt):
            writer.add(make_result(2, 3, path="b.png"))
    finally:
        export_mod.encode_png = real
        writer._stop_threads()  # overlays already started finish (a killed process's would not)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] is False and manifest["pending"][0] == "b/heatmaps.npz"
    assert (out / "b" / "heatmaps.npz").is_file()
    dead = out / ".manifest.json.tmp999999999-7"
    dead.write_bytes(b"")
    alive = out / f".manifest.json.tmp{os.getpid()}-7"
    alive.write_bytes(b"")
    (out / "b" / "keep.txt").write_text("mine")
    assert folder_in_use(out)
    clear_previous(out)
    assert files_under(out) == {alive.name, "b/keep.txt"}
    alive.unlink()


def test_only_temporary_files_do_not_make_a_folder_taken(tmp_path):
    (tmp_path / ".manifest.json.tmp999999999-1").write_bytes(b"")
    assert not folder_in_use(tmp_path)
    (tmp_path / "x").write_bytes(b"")
    assert folder_in_use(tmp_path)


def test_paths_outside_the_folder_are_never_removed(tmp_path):
    out, victim = tmp_path / "out", tmp_path / "victim.txt"
    out.mkdir()
    victim.write_text("keep")
    manifest = {"version": 1, "images": [{"stem": "x", "heatmaps": "../victim.txt", "detections": [
        {"overlay": str(victim)}]}], "errors": [], "files": ["../victim.txt"]}
    (out / "manifest.json").write_text(json.dumps(manifest))
    clear_previous(out)
    assert victim.read_text() == "keep" and not (out / "manifest.json").exists()


def test_failed_run_leaves_no_finished_looking_manifest(tmp_path, images, capsys, monkeypatch):
    from yolocam.explain import explainer

    def broken(self, *a, **k):
        raise RuntimeError("boom")
        yield  # a generator, as the real one

    monkeypatch.setattr(explainer.Explainer, "iter_explain", broken)
    out = tmp_path / "new"
    rc, _, err = run(["explain", images, *ARGS, "--out", out, "--html"], capsys)
    assert rc == 1 and "boom" in err
    assert not out.exists()  # made by this run, nothing in it: removed

    calls = []
    real = explainer.Explainer._explain_items

    def half(self, items, *a, **k):  # the first image is explained, the second fails
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("boom")
        return real(self, items, *a, **k)

    monkeypatch.undo()
    monkeypatch.setattr(explainer.Explainer, "_explain_items", half)
    rc, _, err = run(["explain", images, *ARGS, "--out", out], capsys)
    assert rc == 1
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] is False and len(manifest["images"]) == 1


def test_demo_rerun_with_exist_ok(tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["demo", "--out", out, "--imgsz", "96", "--conf", "0.01", "--max-det", "2"]
    rc, _, err = run(args, capsys)
    assert rc == 0, err
    first = files_under(out)
    assert {"scene.png", "summary.png", "index.html"} <= first and files_under(out) == listed(out)
    rc, _, err = run(args, capsys)
    assert rc == 2 and "--exist-ok" in err
    rc, _, err = run([*args, "--seed", "5", "--exist-ok"], capsys)
    assert rc == 0, err
    assert files_under(out) == listed(out)
