"""`yolocam.distributed` on a local Ray started here (2 CPUs): `explain --ray` writes the same files and
manifest as a single-process run, survives a killed worker, resumes a stopped run without trusting
unfinished files, and `val --ray` equals `val`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import ray  # the test extra installs it (pip install -e ".[test]")

from yolocam.cli import main
from yolocam.demo.scenes import make_scene

IMGSZ = "160"
N_SCENES = 20


@pytest.fixture(scope="session")
def local_ray():
    """A local Ray of 2 CPUs for the whole session (workers inherit this process's environment)."""
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ray_scenes")
    for k in range(N_SCENES):
        cv2.imwrite(str(folder / f"scene{k:02d}.png"), make_scene(100 + k).image)
    (folder / "scene05_broken.png").write_bytes(b"not an image")  # an error entry, in the manifest's order
    return folder


@pytest.fixture(scope="module")
def single(scenes, tmp_path_factory) -> Path:
    """The reference: `yolocam explain` in one process."""
    out = tmp_path_factory.mktemp("single") / "out"
    assert main(["explain", str(scenes), "--model", "demo-v8", "--imgsz", IMGSZ, "--out", str(out),
                 "--save-format", "png"]) == 0
    return out


def manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def assert_same_output(out: Path, ref: Path) -> None:
    """Same manifest (numbers to 1e-4) and, per image, heatmaps within 1/255 and overlays alike."""
    a, b = manifest(out), manifest(ref)
    assert a["complete"] is True and b["complete"] is True and len(b["errors"]) == 1
    assert {k: v for k, v in a.items() if k != "images"} == {k: v for k, v in b.items() if k != "images"}
    assert [i["stem"] for i in a["images"]] == [i["stem"] for i in b["images"]]
    for ia, ib in zip(a["images"], b["images"]):
        assert {k: v for k, v in ia.items() if k != "detections"} == {k: v for k, v in ib.items() if k != "detections"}
        assert len(ia["detections"]) == len(ib["detections"])
        for da, db in zip(ia["detections"], ib["detections"]):
            assert {k: v for k, v in da.items() if k not in ("box", "conf")} == \
                {k: v for k, v in db.items() if k not in ("box", "conf")}
            assert np.allclose(da["box"] + [da["conf"]], db["box"] + [db["conf"]], atol=1e-4)
            oa, ob = (cv2.imread(str(o / da["overlay"])).astype(int) for o in (out, ref))
            assert oa.shape == ob.shape and np.abs(oa - ob).max() <= 3
        with np.load(out / ia["heatmaps"]) as na, np.load(ref / ib["heatmaps"]) as nb:
            assert sorted(na.files) == sorted(nb.files)
            for key in na.files:
                assert na[key].shape == nb[key].shape
                diff = np.abs(na[key].astype(np.float32) - nb[key].astype(np.float32))
                assert diff.size == 0 or diff.max() <= 1 / 255, key
    assert sum(len(i["detections"]) for i in a["images"]) > N_SCENES  # the scenes give something to compare


def test_explain_on_ray_cli_equals_single_process(local_ray, scenes, single, tmp_path, capsys):
    out = tmp_path / "ray"
    rc = main(["explain", str(scenes), "--model", "demo-v8", "--imgsz", IMGSZ, "--out", str(out),
               "--save-format", "png", "--ray", "--workers", "2"])
    assert rc == 0, capsys.readouterr().err
    assert f"{N_SCENES} images" in capsys.readouterr().out
    assert_same_output(out, single)


def test_a_killed_worker_is_restarted_and_nothing_is_lost(local_ray, scenes, single, tmp_path):
    from yolocam.distributed import explain_dataset

    marker = tmp_path / "crashed"
    counts = explain_dataset(str(scenes), tmp_path / "out", model="demo-v8", imgsz=int(IMGSZ), workers=2,
                             _crash_marker=str(marker))
    assert marker.exists()  # a worker process died (os._exit) on its first batch
    assert counts["images"] == N_SCENES and counts["errors"] == 1  # the broken file
    assert_same_output(tmp_path / "out", single)


def test_resume_skips_finished_images_and_redoes_unfinished_ones(local_ray, scenes, single, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(single, out)
    data = manifest(single)
    images = data["images"]
    kept, dropped = images[:14], images[14:]
    broken = kept[3]  # recorded, but a file is missing: redone
    (out / broken["detections"][0]["overlay"]).unlink()
    half = out / dropped[0]["stem"] / f".heatmaps.npz.tmp{2 ** 22 + 12345}-1"  # a dead run's half-written file
    half.write_bytes(b"partial")
    (out / dropped[1]["heatmaps"]).write_bytes(b"truncated")  # files of an image the manifest never finished
    stopped = dict(data, images=kept, complete=False, pending=[dropped[0]["heatmaps"]])
    (out / "manifest.json").write_text(json.dumps(stopped))
    before = {e["stem"]: (out / e["heatmaps"]).stat().st_mtime_ns for e in kept if e is not broken}
    rc = main(["explain", str(scenes), "--model", "demo-v8", "--imgsz", IMGSZ, "--out", str(out),
               "--save-format", "png", "--ray", "--resume"])
    text = capsys.readouterr()
    assert rc == 0, text.err
    assert f"{len(dropped) + 1} images" in text.out and f"{len(before)} already done" in text.out, text.out
    assert all((out / stem / "heatmaps.npz").stat().st_mtime_ns == t for stem, t in before.items())  # not rewritten
    assert not half.exists()
    assert_same_output(out, single)


def test_a_stopped_run_leaves_a_manifest_of_what_it_finished(local_ray, scenes, single, tmp_path, monkeypatch):
    """Ctrl-C in the driver after 5 images came back: the manifest lists exactly those (a resume keeps them)."""
    import yolocam.distributed.explain as dx

    ref = manifest(single)["images"]
    out = tmp_path / "out"
    for entry in ref[:5]:  # the files the workers wrote for them
        shutil.copytree(single / entry["stem"], out / entry["stem"])

    class Stopped:
        def iter_rows(self):
            entries = sorted(os.listdir(scenes))
            for entry in ref[:5]:
                yield {"i": [entries.index(Path(entry["path"]).name)], "result": json.dumps([{"image": entry}])}
            raise KeyboardInterrupt

    monkeypatch.setattr(dx, "_pipeline", lambda *a, **kw: Stopped())
    with pytest.raises(KeyboardInterrupt):
        dx.explain_dataset(str(scenes), out, model="demo-v8", imgsz=int(IMGSZ))
    left = manifest(out)
    assert left["complete"] is False and left["images"] == ref[:5] and left["model"] == manifest(single)["model"]
    assert dx._finished(out, left, [e["path"] for e in ref[:5]], [e["stem"] for e in ref[:5]], False, "png") \
        == dict(enumerate(ref[:5]))


def test_resume_refuses_a_folder_of_another_method(local_ray, scenes, single, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(single, out)
    rc = main(["explain", str(scenes), "--model", "demo-v8", "--imgsz", IMGSZ, "--out", str(out),
               "--save-format", "png", "--ray", "--resume", "--method", "gradcam"])
    err = capsys.readouterr().err
    assert rc == 2 and "cannot resume" in err and "method" in err and len(err.strip().splitlines()) == 1


def test_val_on_ray_equals_val(local_ray, tmp_path):
    from yolocam.distributed import validate_dataset
    from yolocam.evaluation.validation import default_dataset, validate

    data = default_dataset(tmp_path / "data", scenes=10, seed=3)
    kw = dict(imgsz=int(IMGSZ), batch=4, verbose=False)
    one = validate("demo-v8", data=str(data), **kw)
    dist = validate_dataset("demo-v8", data=str(data), workers=2, **kw)  # 3 rect batches over 2 workers
    assert dist.metrics == pytest.approx(one.metrics, abs=1e-9)
    assert dist.classes == one.classes and dist.counts == one.counts and dist.missed == one.missed
    key = lambda r: (r["image"], r["index"])  # noqa: E731
    assert sorted(dist.predictions, key=key) == sorted(one.predictions, key=key)
    assert len(one.predictions) > 10
    assert json.dumps(dist.table) == json.dumps(one.table)  # NaN cells included


def test_val_on_ray_equals_val_for_pose(local_ray, tmp_path):
    """Pose: the shards carry the dataset's kpt_shape, and tp_p merges with the box statistics (data=None:
    the driver generates the pose scenes, as `validate` does)."""
    import torch
    from test_task_validation import CASES, NAMES, tame

    from conftest import build_task_model
    from yolocam.distributed import validate_dataset
    from yolocam.evaluation.validation import default_dataset, validate

    model_class, cfg, extra = CASES[("pose", "26")]
    ckpt = tmp_path / "pose.pt"
    torch.save({"model": tame(build_task_model(model_class, cfg, len(NAMES), NAMES, extra), "pose"),
                "train_args": {"task": "pose"}}, ckpt)
    kw = dict(imgsz=96, batch=2, verbose=False, method="gradcam", conf=0.5)
    one = validate(str(ckpt), data=str(default_dataset(tmp_path / "data", scenes=6, task="pose")), **kw)
    dist = validate_dataset(str(ckpt), data=None, scenes=6, workers=2, **kw)
    assert "metrics/mAP50-95(P)" in one.metrics
    assert dist.metrics == pytest.approx(one.metrics, abs=1e-9)
    assert dist.counts == one.counts and dist.classes == one.classes
    key = lambda r: (Path(r["image"]).name, r["index"])  # noqa: E731
    strip = lambda recs: [{k: v for k, v in r.items() if k != "image"} for r in sorted(recs, key=key)]  # noqa: E731
    assert strip(dist.predictions) == strip(one.predictions) and len(one.predictions) > 0


def test_val_ray_options_reach_validate_dataset(tmp_path, monkeypatch, capsys):
    import yolocam.distributed as dist

    calls = []
    monkeypatch.setattr(dist, "validate_dataset", lambda *a, **kw: calls.append((a, kw)))
    assert main(["val", "--model", "demo-v8", "--imgsz", "96", "--out", str(tmp_path / "v"), "--ray", "auto",
                 "--workers", "3", "--gpus-per-worker", "0.5", "--layers", "15,18,21"]) == 0
    (model,), kw = calls[0]
    assert model == "demo-v8" and kw["address"] == "auto" and kw["workers"] == 3 and kw["gpus_per_worker"] == 0.5
    assert kw["imgsz"] == 96 and kw["layers"] == [15, 18, 21] and kw["out"] == str(tmp_path / "v")
    assert main(["val", "--out", str(tmp_path / "w"), "--ray", "--max-images", "4"]) == 2
    assert "not supported with --ray" in capsys.readouterr().err


def test_ray_missing_says_how_to_install(scenes, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    out = tmp_path / "out"
    rc = main(["explain", str(scenes), "--out", str(out), "--ray"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and 'pip install "yolocam[ray]"' in err and len(err.splitlines()) == 1
    assert not out.exists()
    assert main(["val", "--out", str(tmp_path / "val"), "--ray"]) == 2
    assert 'pip install "yolocam[ray]"' in capsys.readouterr().err
    assert main(["explain", str(scenes), "--out", str(out), "--resume"]) == 2  # --resume needs --ray


def test_the_cli_and_package_do_not_import_ray():
    code = ("import sys, yolocam, yolocam.distributed; from yolocam.cli import main; main(['explain', '--help']); "
            "assert 'ray' not in sys.modules and 'torch' not in sys.modules")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr[-2000:]
