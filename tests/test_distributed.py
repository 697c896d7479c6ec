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

from conftest import assert_same_detections
from yolocam.cli import main
from yolocam.demo.scenes import make_scene

IMGSZ = "160"
N_SCENES = 20


@pytest.fixture(scope="session")
def local_ray():
    """A local Ray of 2 CPUs for the whole session (workers inherit this process's environment, and run torch
    on one intra-op thread as the suite does)."""
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
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


# Another process (and, on a cluster, another machine) runs other kernels: boxes, confidences and maps differ in
# their last bits, and a detection at the edge of the kept set may be kept by one run only. Measured here, Ray
# against one process: equal (the same thread count); the tolerances are those of batched against single kernels
# (tests/test_obb.py: boxes 2.7e-3 px, confidences 8e-7, maps 1.2e-5).
BOX_PX, CONF, MAP = 0.05, 1e-4, 1 / 255  # maps are compared as written (8-bit PNG): one step of rounding
CONF_THRESHOLD = 0.25  # explain's default for a detect model


def assert_same_output(out: Path, ref: Path) -> None:
    """Same manifest and, per image, the same detections (matched by IoU: anchors, levels, classes exact;
    boxes, confidences to float32 rounding), their heatmaps within one 8-bit step and overlays alike."""
    a, b = manifest(out), manifest(ref)
    assert a["complete"] is True and b["complete"] is True and len(b["errors"]) == 1
    assert {k: v for k, v in a.items() if k != "images"} == {k: v for k, v in b.items() if k != "images"}
    assert [i["stem"] for i in a["images"]] == [i["stem"] for i in b["images"]]
    matched = 0
    for ia, ib in zip(a["images"], b["images"]):
        assert {k: v for k, v in ia.items() if k != "detections"} == {k: v for k, v in ib.items() if k != "detections"}
        pairs = assert_same_detections(ia["detections"], ib["detections"], box_px=BOX_PX, conf=CONF,
                                       threshold=CONF_THRESHOLD)
        matched += len(pairs)
        with np.load(out / ia["heatmaps"]) as na, np.load(ref / ib["heatmaps"]) as nb:
            assert sorted(na.files) == sorted(nb.files)
            for key in na.files:
                assert na[key].shape[1:] == nb[key].shape[1:]
            for i, j in pairs:
                da, db = ia["detections"][i], ib["detections"][j]
                assert {k: v for k, v in da.items() if k not in ("box", "conf", "index", "overlay")} == \
                    {k: v for k, v in db.items() if k not in ("box", "conf", "index", "overlay")}
                oa, ob = cv2.imread(str(out / da["overlay"])).astype(int), cv2.imread(str(ref / db["overlay"])).astype(int)
                assert oa.shape == ob.shape and np.abs(oa - ob).max() <= 3
                for key in ("heatmaps", "boxes", "scores", "classes"):
                    if key in na.files:
                        diff = np.abs(na[key][i].astype(np.float32) - nb[key][j].astype(np.float32))
                        assert diff.max(initial=0) <= {"heatmaps": MAP, "boxes": BOX_PX, "scores": CONF}.get(key, 0), key
    assert matched > N_SCENES  # the scenes give something to compare


def _close(a, b, atol: float, path: str = "") -> None:
    """Nested report values: integers, strings and flags equal; floats (NaN included) within atol."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), path
        for k in a:
            _close(a[k], b[k], atol, f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), path
        for k, (x, y) in enumerate(zip(a, b)):
            _close(x, y, atol, f"{path}[{k}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert (np.isnan(a) and np.isnan(b)) or abs(a - b) <= atol, (path, a, b)
    else:
        assert a == b, (path, a, b)


def assert_same_predictions(got: list[dict], ref: list[dict], image_key) -> None:
    """The explained predictions of two validations, per image matched by IoU and class (`assert_same_detections`);
    matched ones have the same labels (tp, gt: exact) and localisation scores to 1e-3. A pointing-game hit may
    flip where the map's peak is tied within rounding at the box edge: at most 5% of them do (measured: none)."""
    by_image: dict = {}
    for side, recs in enumerate((got, ref)):
        for r in recs:
            by_image.setdefault(image_key(r), ([], []))[side].append(r)
    flips, matched = 0, 0
    for mine, theirs in by_image.values():
        pairs = assert_same_detections(mine, theirs, box_px=BOX_PX, conf=CONF, threshold=CONF_THRESHOLD)
        for i, j in pairs:
            a, b = mine[i], theirs[j]
            pixels = [k for k in a if any(w in k for w in ("box", "keypoint", "polygon"))]  # gt_box, rbox, ...
            loose = ("image", "index", "conf", "pointing", *pixels)
            _close({k: v for k, v in a.items() if k not in loose}, {k: v for k, v in b.items() if k not in loose}, 1e-3)
            _close({k: a[k] for k in pixels}, {k: b.get(k) for k in pixels}, BOX_PX)
            flips += a.get("pointing") != b.get("pointing")
        matched += len(pairs)
    assert matched > 0 and flips <= 0.05 * matched, (flips, matched)


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


def assert_same_validation(dist, one, image_key, missed: bool = True) -> None:
    """`val --ray` against `val`: metrics, per-class rows and the table to 1e-4 (they read confidences through
    the precision-recall curves; measured: equal), counts exact but for the explanations of predictions at the
    kept set's edge, the predictions matched per image (`assert_same_predictions`)."""
    _close(dist.metrics, one.metrics, 1e-4)
    _close(dist.classes, one.classes, 1e-4)
    _close(json.loads(json.dumps(dist.table)), json.loads(json.dumps(one.table)), 1e-4)  # NaN cells included
    assert {k: v for k, v in dist.counts.items() if k != "explanations"} == \
        {k: v for k, v in one.counts.items() if k != "explanations"}
    assert dist.counts["explanations"] == len(dist.predictions) and one.counts["explanations"] == len(one.predictions)
    assert abs(len(dist.predictions) - len(one.predictions)) <= 0.05 * len(one.predictions)
    if missed:
        key = lambda r: (r["image"], r["cls"], r["box"])  # noqa: E731
        _close(sorted(dist.missed, key=key), sorted(one.missed, key=key), 1e-3)
    assert_same_predictions(dist.predictions, one.predictions, image_key)


def test_val_on_ray_equals_val(local_ray, tmp_path):
    from yolocam.distributed import validate_dataset
    from yolocam.evaluation.validation import default_dataset, validate

    data = default_dataset(tmp_path / "data", scenes=10, seed=3)
    kw = dict(imgsz=int(IMGSZ), batch=4, verbose=False)
    one = validate("demo-v8", data=str(data), **kw)
    dist = validate_dataset("demo-v8", data=str(data), workers=2, **kw)  # 3 rect batches over 2 workers
    assert_same_validation(dist, one, image_key=lambda r: r["image"])
    assert len(one.predictions) > 10


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
    assert_same_validation(dist, one, image_key=lambda r: Path(r["image"]).name, missed=False)
    assert len(one.predictions) > 0


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


def test_val_on_ray_carries_the_why_not_records_maps_and_gallery(local_ray, tmp_path):
    """demo-marks on edited evidence scenes (tests/test_val_why_not.py): erased marks give missed ground truths,
    swapped marks confusions. On Ray (3 batches over 2 workers) the missed records (anchor, IoU, pointing, energy),
    their maps in missed.npz (same order, `index`, sizes), the confusion records and table, `outside` and the
    gallery's why-not sections are those of one process."""
    from test_val_why_not import IMGSZ as MARKS_IMGSZ, MARKS, N_SCENES, SIZE, _scenes

    from yolocam.demo.why_not_scenes import write_edited_dataset
    from yolocam.distributed import validate_dataset
    from yolocam.evaluation.validation import validate

    data = str(write_edited_dataset(tmp_path / "data", *_scenes(), size=SIZE))
    kw = dict(imgsz=MARKS_IMGSZ, batch=2, verbose=False, device="cpu")
    one = validate(str(MARKS), data=data, out=tmp_path / "one", **kw)
    dist = validate_dataset(str(MARKS), data=data, workers=2, out=tmp_path / "ray", **kw)
    assert_same_validation(dist, one, image_key=lambda r: r["image"])
    assert len(one.missed) >= N_SCENES and all("anchor" in m and "reason" not in m for m in one.missed)
    assert [(m["image"], m["gt"]) for m in dist.missed] == [(m["image"], m["gt"]) for m in one.missed]
    _close(list(dist.missed), list(one.missed), 1e-3)  # pred_box, iou, logit, pointing, energy: in the same order
    for a, b in zip(dist.missed, one.missed):
        np.testing.assert_allclose(a.heatmap, b.heatmap, atol=2e-3)
    confused = lambda rep: [(r["image"], r["index"], r["confused_with"], r["confused_gt"])  # noqa: E731
                            for r in rep.predictions if r.get("confused_with")]
    assert confused(dist) == confused(one) and len(confused(one)) >= N_SCENES // 2
    _close(dist.confusions, one.confusions, 1e-3)
    for a, b in zip([r for r in dist.predictions if r.get("confused_with")],
                    [r for r in one.predictions if r.get("confused_with")]):
        np.testing.assert_allclose(a.contrast_heatmap, b.contrast_heatmap, atol=2e-3)
    with np.load(tmp_path / "ray" / "missed.npz") as na, np.load(tmp_path / "one" / "missed.npz") as nb:
        assert sorted(na.files) == sorted(nb.files)
        for key in ("map_size", "image_size", "index"):
            np.testing.assert_array_equal(na[key], nb[key])
        np.testing.assert_allclose(na["heatmaps"].astype(np.float32), nb["heatmaps"].astype(np.float32), atol=2e-3)
    cases = [json.loads((tmp_path / side / "worst" / "cases.json").read_text()) for side in ("ray", "one")]
    strip = lambda cs: sorted((c["kind"], c["image"], c["name"]) for c in cs)  # noqa: E731
    assert strip(cases[0]) == strip(cases[1])  # the same cases in each section (ranks may swap on near-ties)
    assert {"missed", "confusion", "context"} <= {c["kind"] for c in cases[0]}
    html = (tmp_path / "ray" / "worst" / "index.html").read_text()
    for kind in ("missed", "confusion", "context"):
        assert f'data-kind="{kind}"' in html
