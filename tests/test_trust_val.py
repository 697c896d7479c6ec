"""What `yolocam val` and the Ray runs trust: a dataset that does not fit the model, images ultralytics'
dataset scan leaves out, datasets with no usable image, workers a Ray cluster cannot place, and a
resume over a manifest that does not match the source or is malformed (issue 21, items 7, 10, 11, 12)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import cv2
import pytest
import ray  # the test extra installs it

from yolocam.cli import main
from yolocam.demo.scenes import make_scene
from yolocam.errors import YolocamError
from yolocam.evaluation.validation import default_dataset, validate

IMGSZ = 96
SCENES = 4
FAST = dict(imgsz=IMGSZ, batch=2, method="gradcam", max_explanations=2, worst=0, verbose=False, device="cpu")
ANSI = re.compile(r"\x1b\[")


@pytest.fixture(scope="module")
def scenes_data(tmp_path_factory) -> Path:
    """4 generated validation scenes (the demo detector's 4 classes); copied before each change."""
    return default_dataset(tmp_path_factory.mktemp("trust_val") / "data", scenes=SCENES, seed=5)


def copy_data(data: Path, dest: Path, names: list[str] | None = None) -> Path:
    """A copy of the dataset at `dest` (no label cache), optionally with other class names."""
    shutil.copytree(data.parent, dest, ignore=shutil.ignore_patterns("*.cache"))
    names = names or ["circle", "square", "triangle", "cross"]
    lines = [f"path: {dest}", "train: images/val", "val: images/val", "names:"]
    (dest / "data.yaml").write_text("\n".join(lines + [f"  {k}: {n}" for k, n in enumerate(names)]) + "\n")
    return dest / "data.yaml"


def val_labels(yaml: Path) -> list[Path]:
    return sorted((yaml.parent / "labels" / "val").glob("*.txt"))


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert not ANSI.search(err) and "Traceback" not in err and "unexpected" not in err, err
    return lines[0]


# ------------------------------------------------------------------ 7: names and skipped images
def test_names_with_another_class_count_are_refused(scenes_data, tmp_path, capsys):
    data = copy_data(scenes_data, tmp_path / "two", names=["circle", "square"])
    with pytest.raises(YolocamError, match=r"names 2 classes, the model predicts 4") as err:
        validate(data=str(data), **FAST)
    assert str(data) in str(err.value)
    assert main(["val", "--data", str(data), "--imgsz", str(IMGSZ), "--out", str(tmp_path / "o")]) == 2
    line = one_line(capsys.readouterr().err)
    assert "2 classes" in line and "predicts 4" in line and str(data) in line


def test_a_malformed_label_line_is_counted_and_said(scenes_data, tmp_path, capsys):
    data = copy_data(scenes_data, tmp_path / "bad", names=None)
    bad = val_labels(data)[1]
    rows = sum(1 for line in bad.read_text().splitlines() if line.strip()) + 1  # its lines and the malformed one
    with open(bad, "a") as fh:
        fh.write("1 0.5 0.5\n")
    out = tmp_path / "o"
    assert main(["val", "--data", str(data), "--imgsz", str(IMGSZ), "--method", "gradcam", "--max-explanations", "2",
                 "--out", str(out)]) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if "left out" in line]
    assert len(warnings) == 1 and warnings[0].startswith("yolocam: warning: ultralytics left out 1 of 4"), err
    image = str(data.parent / "images" / "val" / (bad.stem + ".jpg"))
    assert image in warnings[0] and not ANSI.search(err)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["skipped"]["images"] == 1 and saved["skipped"]["labels"] == rows
    assert saved["skipped"]["first_reason"].startswith(f"{image}: ignoring corrupt image/label")
    assert saved["counts"]["images"] == SCENES - 1
    clean = validate(data=str(copy_data(scenes_data, tmp_path / "clean")), **FAST)
    assert clean.skipped == {"images": 0, "labels": 0, "first_reason": None} and clean.counts["images"] == SCENES


def test_same_count_other_names_are_matched_by_index_and_said(scenes_data, tmp_path, caplog):
    data = copy_data(scenes_data, tmp_path / "renamed", names=["ball", "box", "wedge", "plus"])
    with caplog.at_level("WARNING", logger="yolocam"):
        report = validate(data=str(data), **FAST)
    said = [r.getMessage() for r in caplog.records if "matched by index" in r.getMessage()]
    assert len(said) == 1 and "'ball' -> 'circle'" in said[0]
    assert report.settings["data_names"] == {0: "ball", 1: "box", 2: "wedge", 3: "plus"}
    assert report.counts["images"] == SCENES and {r["class"] for r in report.classes} <= {
        "circle", "square", "triangle", "cross"}


# ------------------------------------------------------------------ 10: nothing usable
def test_an_empty_image_folder_is_one_line(tmp_path, capsys):
    root = tmp_path / "empty"
    (root / "images" / "val").mkdir(parents=True)
    (root / "data.yaml").write_text(f"path: {root}\ntrain: images/val\nval: images/val\nnames: [a, b, c, d]\n")
    assert main(["val", "--data", str(root / "data.yaml"), "--imgsz", "64", "--out", str(tmp_path / "o")]) == 2
    line = one_line(capsys.readouterr().err)
    assert "no validation images" in line and str(root / "images" / "val") in line


def test_every_label_invalid_is_one_line(scenes_data, tmp_path, capsys):
    data = copy_data(scenes_data, tmp_path / "allbad")
    for label in val_labels(data):
        label.write_text("0 0.5 0.5\n")
    assert main(["val", "--data", str(data), "--imgsz", str(IMGSZ), "--out", str(tmp_path / "o")]) == 2
    line = one_line(capsys.readouterr().err)
    assert f"none of the {SCENES} validation images" in line and "ignoring corrupt image/label" in line


# ------------------------------------------------------------------ Ray: a local cluster of 2 CPUs
@pytest.fixture(scope="module")
def local_ray():
    """A local Ray of 2 CPUs and no GPU (as tests/test_distributed.py starts it)."""
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False)
    yield ray
    if started:
        ray.shutdown()


def test_workers_the_cluster_cannot_place_are_refused(local_ray, scenes_data, tmp_path, capsys):
    from yolocam.distributed import explain_dataset, validate_dataset

    if ray.cluster_resources().get("GPU", 0):
        pytest.skip("this Ray cluster has GPUs")
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), make_scene(1).image)
    out = tmp_path / "out"
    with pytest.raises(YolocamError, match=r"asked for 1 GPU per worker, the Ray cluster has 0"):
        explain_dataset(str(image), out, model="demo-v8", imgsz=IMGSZ, gpus_per_worker=1)
    assert not out.exists()
    with pytest.raises(YolocamError, match=r"asked for 2 GPUs per worker, the Ray cluster has 0"):
        validate_dataset("demo-v8", data=str(scenes_data), gpus_per_worker=2, **{k: v for k, v in FAST.items()
                                                                                 if k != "max_explanations"})
    assert main(["explain", str(image), "--model", "demo-v8", "--out", str(out), "--ray", "--gpus-per-worker",
                 "1"]) == 2
    assert "GPU per worker" in one_line(capsys.readouterr().err) and not out.exists()
    assert main(["val", "--data", str(scenes_data), "--out", str(tmp_path / "v"), "--ray", "--gpus-per-worker",
                 "1"]) == 2
    assert "the Ray cluster has 0" in one_line(capsys.readouterr().err)
    with pytest.raises(YolocamError, match=r"3 CPUs per worker, the largest node of the Ray cluster has 2"):
        explain_dataset(str(image), out, model="demo-v8", imgsz=IMGSZ, cpus_per_worker=3)
    with pytest.raises(YolocamError, match=r"leaving none to read images"):  # Ray would wait forever
        explain_dataset(str(image), out, model="demo-v8", imgsz=IMGSZ, workers=2, cpus_per_worker=1)


def test_val_on_ray_counts_skipped_images_as_val_does(local_ray, scenes_data, tmp_path, caplog):
    """Two of the four images unusable: the driver scans the dataset as one process does, so the shards hold
    the same batches (same metrics), the report skips what one process skips, and says it once."""
    from yolocam.distributed import validate_dataset

    data = copy_data(scenes_data, tmp_path / "half")
    for label in val_labels(data)[2:]:
        label.write_text("0 0.5 0.5\n")
    kw = {k: v for k, v in FAST.items() if k != "max_explanations"}
    one = validate(data=str(data), **kw)
    caplog.clear()
    with caplog.at_level("WARNING", logger="yolocam"):
        dist = validate_dataset(data=str(data), workers=1, shards=2, **kw)
    assert one.skipped["images"] == 2 and dist.skipped == one.skipped
    assert dist.counts == one.counts and dist.metrics == pytest.approx(one.metrics, abs=1e-9)
    assert sum("left out 2 of 4" in r.getMessage() for r in caplog.records) == 1
    for label in val_labels(data)[:2]:
        label.write_text("0 0.5 0.5\n")
    with pytest.raises(YolocamError, match=r"none of the 4 validation images"):
        validate_dataset(data=str(data), workers=1, shards=2, **kw)
    with pytest.raises(YolocamError, match=r"names 2 classes, the model predicts 4"):
        validate_dataset(data=str(copy_data(scenes_data, tmp_path / "two", names=["a", "b"])), **kw)


# ------------------------------------------------------------------ 12: resume
def listed(out: Path, manifest: dict) -> set[str]:
    rels = {"manifest.json", *manifest.get("files", [])}
    for img in manifest["images"]:
        rels.add(img["heatmaps"])
        for det in img["detections"]:
            rels.update(det[k] for k in ("overlay", "crop") if k in det)
    return rels


def on_disk(out: Path) -> set[str]:
    return {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and not p.name.startswith(".")}


def test_resume_keeps_stems_and_redoes_malformed_entries(local_ray, tmp_path, capsys):
    """A resume after: a detection of b lost its box, A.png was added beside a.png, d.png (finished) and
    e.png (its entry malformed) left the source. b is explained again, a keeps its stem and A gets another,
    d stays listed, e's files are removed: every file in the folder is listed, the gallery is written."""
    src = tmp_path / "src"
    src.mkdir()
    for k, name in enumerate("abcde"):
        cv2.imwrite(str(src / f"{name}.png"), make_scene(200 + k).image)
    out = tmp_path / "out"
    common = ["--model", "demo-v8", "--imgsz", "160", "--html", "--save-format", "png"]
    assert main(["explain", str(src), "--out", str(out), *common]) == 0
    first = json.loads((out / "manifest.json").read_text())
    by_stem = {img["stem"]: img for img in first["images"]}
    assert all(by_stem[s]["detections"] for s in "be"), "the scenes give detections to break"
    del by_stem["b"]["detections"][0]["box"]
    del by_stem["e"]["detections"][0]["box"]
    (out / "manifest.json").write_text(json.dumps(first))
    b_count = len(by_stem["b"]["detections"])
    (src / "d.png").unlink()
    (src / "e.png").unlink()
    shutil.copy(src / "a.png", src / "A.png")
    rc = main(["explain", str(src), "--out", str(out), "--ray", "--resume", *common])
    text = capsys.readouterr()
    assert rc == 0, text.err
    assert "2 images" in text.out and "2 already done" in text.out, text.out
    after = json.loads((out / "manifest.json").read_text())
    stems = {Path(img["path"]).name: img["stem"] for img in after["images"]}
    assert stems["a.png"] == "a" and stems["A.png"].casefold() != "a" and stems["d.png"] == "d"
    assert "e.png" not in stems and not (out / "e").exists()
    b = next(img for img in after["images"] if img["stem"] == "b")
    assert all("box" in det for det in b["detections"])
    assert len(b["detections"]) == b_count
    assert on_disk(out) == listed(out, after) | {"index.html"}, "a file nobody lists"
    assert (out / "index.html").is_file() and after["complete"] is True
