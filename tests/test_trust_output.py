"""Nothing outside the output folder is touched, runs never clobber each other (issue: trust II, items 1-5).

Symbolic links planted in an output folder (or named by a manifest) never lead a removal or a write out
of it; one run owns a folder at a time; image names never collide with the folder's own files; the output
folder is never part of the source; `load_output` never reads outside its folder or trusts a size.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from yolocam.cli import main
from yolocam.demo.scenes import make_scene
from yolocam.errors import YolocamError
from yolocam.output import lock as lock_mod
from yolocam.output.cleanup import clear_previous, remove_listed
from yolocam.output.export import ExportWriter
from yolocam.output.files import atomic_write_bytes, encode_npz
from yolocam.output.paths import inside
from yolocam.output.reader import load_output

from test_export import make_result

ARGS = ["--model", "demo-v8", "--imgsz", "96", "--conf", "0.01", "--max-det", "2"]


def run(argv, capsys):
    rc = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def snapshot(folder: Path) -> dict:
    """Every entry under `folder` (not following links) with its bytes (files) or target (links)."""
    shot = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            p = Path(root) / name
            rel = p.relative_to(folder).as_posix()
            shot[rel] = ("link", os.readlink(p)) if p.is_symlink() else \
                ("dir",) if p.is_dir() else ("file", p.read_bytes())
    return shot


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("trust_src")
    for i, name in enumerate(["a", "manifest.json", "index.html"]):
        cv2.imwrite(str(folder / f"{name}.png"), make_scene(i, size=(96, 120)).image)
    return folder


@pytest.fixture
def outside(tmp_path) -> Path:
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "precious.txt").write_text("keep me")
    (folder / "heatmaps.npz").write_text("not yolocam's")
    (folder / ".x.tmp999999-1").write_text("looks like a temporary file of a dead run")
    return folder


# --------------------------------------------------------------------------- item 1: links
def test_exist_ok_never_deletes_through_a_linked_folder(tmp_path, outside, images, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "link").symlink_to(outside, target_is_directory=True)
    (out / "manifest.json").write_text(json.dumps({"version": 1, "images": [
        {"stem": "link", "heatmaps": "link/precious.txt", "detections": [{"overlay": "link/heatmaps.npz"}]}],
        "errors": [], "files": ["link/.x.tmp999999-1", "../outside/precious.txt", str(outside / "precious.txt")]}))
    before = snapshot(outside)
    rc, _, err = run(["explain", images / "a.png", *ARGS, "--out", out, "--exist-ok"], capsys)
    assert rc == 0, err
    assert snapshot(outside) == before
    assert (out / "link").is_symlink()  # the user's link itself is left alone too


def test_writes_never_follow_a_linked_image_folder(tmp_path, outside, images, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "a").symlink_to(outside, target_is_directory=True)  # where a.png's files would go
    before = snapshot(outside)
    rc, _, err = run(["explain", images / "a.png", *ARGS, "--out", out, "--exist-ok"], capsys)
    assert rc == 0, err
    assert snapshot(outside) == before
    [img] = json.loads((out / "manifest.json").read_text())["images"]
    assert img["stem"] == "a_2" and (out / "a_2" / "heatmaps.npz").is_file()


def test_a_planted_temporary_file_link_is_never_written_through(tmp_path, outside):
    out = tmp_path / "out"
    out.mkdir()
    target = out / "data.bin"
    tmp = out / f".data.bin.tmp{os.getpid()}-{__import__('threading').get_ident()}"
    tmp.symlink_to(outside / "precious.txt")
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new" and (outside / "precious.txt").read_text() == "keep me"
    (out / "linked.bin").symlink_to(outside / "precious.txt")
    atomic_write_bytes(out / "linked.bin", b"replaced")  # the link is replaced, not written through
    assert not (out / "linked.bin").is_symlink() and (outside / "precious.txt").read_text() == "keep me"


def test_inside_refuses_every_way_out(tmp_path, outside):
    out = tmp_path / "out"
    (out / "real").mkdir(parents=True)
    (out / "real" / "f.txt").write_text("x")
    (out / "link").symlink_to(outside, target_is_directory=True)
    (out / "real" / "deep").symlink_to(outside, target_is_directory=True)
    (out / "file").write_text("x")
    assert inside(out, "real/f.txt") == out / "real" / "f.txt"
    assert inside(out, "new/file.png") == out / "new" / "file.png"  # not there yet: fine
    for rel in ["link/precious.txt", "link", "real/deep/precious.txt", "../outside/precious.txt",
                str(outside / "precious.txt"), "real/../../outside/precious.txt", "file/x", "", None, 3,
                "a\\b", "a\0b"]:
        assert inside(out, rel) is None, rel


NAMES = st.sampled_from(["a", "b", "link", "c", "crops", "manifest.json", "..", "x.png", "heatmaps.npz"])
RELS = st.lists(NAMES, min_size=1, max_size=4).map("/".join) | st.sampled_from(
    ["/etc/passwd", "../outside/precious.txt", "link/precious.txt", "a/../../outside/heatmaps.npz"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(links=st.lists(st.tuples(NAMES, st.booleans()), max_size=4), listed=st.lists(RELS, max_size=8),
       stems=st.lists(NAMES, min_size=1, max_size=3), crops=st.booleans())
def test_property_nothing_outside_out_is_removed_or_written(tmp_path_factory, links, listed, stems, crops):
    """Any manifest, any links planted in the folder (to the outside folder, or into it), any image names:
    clearing the previous run and writing a new one changes nothing outside `out`."""
    base = tmp_path_factory.mktemp("prop")
    outside = base / "outside"
    outside.mkdir()
    for name in ("precious.txt", "heatmaps.npz", "x.png", ".x.tmp999999-1"):
        (outside / name).write_text(name)
    (outside / "a").mkdir()
    (outside / "a" / "heatmaps.npz").write_text("deep")
    out = base / "out"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps({"version": 1, "images": [
        {"stem": "s", "heatmaps": rel, "detections": [{"overlay": rel, "crop": rel}]} for rel in listed],
        "errors": [], "pending": listed, "files": listed}))
    for name, to_folder in links:
        path = out / name
        if name == "manifest.json":
            path.unlink()  # a planted manifest link: read as no manifest, replaced (not written through)
        if name != ".." and not os.path.lexists(path):
            path.symlink_to(outside if to_folder else outside / "precious.txt", target_is_directory=to_folder)
    before = snapshot(outside)
    clear_previous(out)
    remove_listed(out, listed)
    with ExportWriter(out, crops=crops, html=True) as writer:
        for k, stem in enumerate(stems):
            writer.add(make_result(k, 1, path=f"/src/{stem}.png"))
    assert snapshot(outside) == before
    m = json.loads((out / "manifest.json").read_text())
    written = [img["heatmaps"] for img in m["images"]] + [v for img in m["images"] for d in img["detections"]
                                                          for k, v in d.items() if k in ("overlay", "crop")]
    assert len(m["images"]) == len(stems)
    for rel in written:  # everything the run wrote is really inside `out`, reached without a link
        assert inside(out, rel) is not None and (out / rel).is_file() and not (out / rel).is_symlink()


# --------------------------------------------------------------------------- item 2: one run per folder
HOLDER = """
import sys, time
from yolocam.output.lock import acquire
acquire(sys.argv[1])
print("locked", flush=True)
time.sleep(120)
"""


@pytest.fixture
def held(tmp_path):
    """A folder whose lock another live process holds (as a running `yolocam explain` would)."""
    out = tmp_path / "busy"
    out.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).parent)
    try:
        assert proc.stdout.readline().strip() == "locked"
        yield out, proc.pid
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("command", [["explain", "IMAGES", *ARGS], ["explain", "IMAGES", *ARGS, "--ray"],
                                     ["val", "--model", "demo-v8"], ["demo", "--imgsz", "96"]])
def test_a_second_run_into_a_busy_folder_is_refused_naming_the_first(held, images, command, capsys):
    out, pid = held
    (out / "theirs.txt").write_text("the running run's file")
    argv = [images if a == "IMAGES" else a for a in command] + ["--out", out, "--exist-ok"]
    rc, _, err = run(argv, capsys)
    assert rc == 2 and "in use by another yolocam run" in err and f"pid {pid}" in err, err
    assert len(err.strip().splitlines()) == 1
    assert (out / "theirs.txt").read_text() == "the running run's file"


def test_the_api_refuses_a_busy_folder_too(held):
    out, _ = held
    with pytest.raises(YolocamError, match="in use by another yolocam run"):
        make_result(0, 1).save(out)


def test_a_dead_runs_lock_is_taken_over(tmp_path, images, capsys):
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.run([sys.executable, "-c", "import sys; from yolocam.output.lock import acquire; "
                           "acquire(sys.argv[1]); import os; os._exit(9)", str(out)], cwd=Path(__file__).parent)
    assert proc.returncode == 9 and (out / lock_mod.LOCK_NAME).is_file()  # killed: its lock file stays
    rc, _, err = run(["explain", images / "a.png", *ARGS, "--out", out, "--exist-ok"], capsys)
    assert rc == 0, err
    assert not (out / lock_mod.LOCK_NAME).exists()  # released and removed at the end of the run


def test_a_run_into_a_new_folder_refuses_when_another_one_filled_it_first(tmp_path, images, capsys):
    """Two runs started together into a new --out: the second one to get the lock finds the first one's
    files and refuses (without --exist-ok), instead of replacing its manifest."""
    out = tmp_path / "new"
    rc, _, err = run(["explain", images / "a.png", *ARGS, "--out", out], capsys)
    assert rc == 0, err
    import importlib

    cli_main = importlib.import_module("yolocam.cli.out_folder")
    # as seen by a second run that checked before the folder existed (existed=False), then got the lock:
    with pytest.raises(YolocamError, match="already exists and is not empty"):
        with cli_main.owned(out, False, False):
            pass
    assert json.loads((out / "manifest.json").read_text())["images"]


def test_lock_is_reentrant_and_release_is_safe_twice(tmp_path):
    key = lock_mod.acquire(tmp_path)
    assert lock_mod.acquire(tmp_path) == key and lock_mod.holds(tmp_path)
    lock_mod.release(key)
    assert lock_mod.holds(tmp_path)
    lock_mod.release(key)
    lock_mod.release(key)
    assert not lock_mod.holds(tmp_path) and not (tmp_path / lock_mod.LOCK_NAME).exists()


# --------------------------------------------------------------------------- item 3: own names
def test_image_names_never_collide_with_the_folders_own_files(tmp_path, images, capsys):
    out = tmp_path / "out"
    rc, stdout, err = run(["explain", images, *ARGS, "--out", out, "--html"], capsys)
    assert rc == 0, err
    m = json.loads((out / "manifest.json").read_text())
    assert sorted(i["stem"] for i in m["images"]) == ["a", "index.html_2", "manifest.json_2"] and not m["errors"]
    assert (out / "manifest.json").is_file() and (out / "index.html").is_file()
    assert "index.html_2" in (out / "index.html").read_text()


def test_a_file_in_the_way_of_an_image_folder_is_avoided(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "photo").write_text("a user's file named like the image folder")
    with ExportWriter(out) as writer:
        entry = writer.add(make_result(0, 1, path="/x/photo.png"))
    assert entry["stem"] == "photo_2" and (out / "photo").read_text().startswith("a user's")


# --------------------------------------------------------------------------- item 4: out inside the source
def test_the_output_folder_is_never_part_of_the_source(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        cv2.imwrite(str(src / f"s{i}.png"), make_scene(i, size=(96, 120)).image)
    out = src / "out"
    for _ in range(2):
        rc, _, err = run(["explain", src, "--recursive", *ARGS, "--out", out, "--exist-ok", "--html"], capsys)
        assert rc == 0, err
        m = json.loads((out / "manifest.json").read_text())
        assert len(m["images"]) == 3 and not m["errors"]
    assert "inside the output folder" in err
    rc, _, err = run(["explain", out, "--recursive", *ARGS, "--out", out, "--exist-ok"], capsys)
    assert rc == 2 and "every source image is inside the output folder" in err


# --------------------------------------------------------------------------- item 5: load_output
def _folder_with_one_image(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    make_result(0, 1).save(out)
    return out


def test_load_output_never_reads_outside_its_folder(tmp_path):
    out = _folder_with_one_image(tmp_path)
    secret = tmp_path / "secret"
    secret.mkdir()
    m = json.loads((out / "manifest.json").read_text())
    stem = m["images"][0]["stem"]
    (secret / "heatmaps.npz").write_bytes((out / stem / "heatmaps.npz").read_bytes())
    for rel in ["../secret/heatmaps.npz", str(secret / "heatmaps.npz"), "link/heatmaps.npz"]:
        (out / "link").unlink(missing_ok=True)
        (out / "link").symlink_to(secret, target_is_directory=True)
        m["images"][0]["heatmaps"] = rel
        (out / "manifest.json").write_text(json.dumps(m))
        with pytest.raises(YolocamError, match="leaves the folder"):
            load_output(out)


def test_load_output_refuses_an_impossible_image_size(tmp_path):
    out = _folder_with_one_image(tmp_path)
    m = json.loads((out / "manifest.json").read_text())
    img = m["images"][0]
    maps = np.zeros((1, 8, 8), np.float16)
    common = dict(boxes=np.zeros((1, 4), np.float32), classes=np.zeros(1, np.int32), scores=np.ones(1, np.float32))
    (out / img["heatmaps"]).write_bytes(encode_npz(heatmaps=maps, image_size=np.array([200000, 200000], np.int32),
                                                   **common))
    with pytest.raises(YolocamError, match="the manifest says"):
        load_output(out)
    img["width"] = img["height"] = 200000
    (out / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(YolocamError, match="image too large"):
        load_output(out)
