"""Videos, URLs and streams: frames read by ultralytics' loaders, explained one by one, written per frame with an
annotated video; boxes equal `YOLO.predict` on the same source. All offline: a generated mp4, a local HTTP server."""

from __future__ import annotations

import functools
import http.server
import json
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

import yolocam
from yolocam.cli import main
from yolocam.demo.models import demo_model_path
from yolocam.demo.scenes import make_scene
from yolocam.errors import YolocamError

IMGSZ = 160
FRAMES = 10
SIDE = 160


def write_clip(path: Path, frames: int = FRAMES, side: int = SIDE, seed: int = 3) -> Path:
    """A `frames`-frame mp4 (mp4v): a window sliding 3 px a frame over a generated scene of shapes."""
    scene = make_scene(seed, size=(side, side + 3 * frames)).image
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (side, side))
    assert writer.isOpened()
    for k in range(frames):
        writer.write(np.ascontiguousarray(scene[:, 3 * k:3 * k + side]))
    writer.release()
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return write_clip(tmp_path_factory.mktemp("video") / "clip.mp4")


@pytest.fixture(scope="module")
def exp():
    return yolocam.Explainer("demo-v8", imgsz=IMGSZ)


@pytest.fixture(scope="module")
def predicted(clip):
    """`YOLO(demo-v8).predict` on the clip: per stride, each frame's boxes (xyxy) and classes."""
    from ultralytics import YOLO

    yolo = YOLO(str(demo_model_path()))
    out = {}
    for stride in (1, 2):
        res = yolo.predict(str(clip), imgsz=IMGSZ, vid_stride=stride, verbose=False, stream=True)
        out[stride] = [(r.boxes.xyxy.numpy(), r.boxes.cls.int().tolist()) for r in res]
    return out


def assert_boxes_equal(results, predicted) -> None:
    assert len(results) == len(predicted)
    for r, (boxes, classes) in zip(results, predicted):
        ours = np.asarray([d.box for d in r.detections], np.float32).reshape(-1, 4)
        assert ours.shape == boxes.shape, (r.frame, ours, boxes)
        np.testing.assert_allclose(ours, boxes, atol=1e-2)
        assert [d.cls for d in r.detections] == classes


def read_video(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), path
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            return frames
        frames.append(frame)


def run(argv, capsys) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


# ------------------------------------------------------------------ API
def test_video_frames_equal_ultralytics_predict(exp, clip, predicted):
    results = exp.explain(str(clip))
    assert [r.frame for r in results] == list(range(FRAMES))
    assert {r.path for r in results} == {str(clip)} and {r.source for r in results} == {str(clip)}
    assert sum(len(r.detections) for r in results) > 0
    assert_boxes_equal(results, predicted[1])
    assert results[0].detections[0].heatmap.shape == (SIDE, SIDE)


def test_vid_stride_takes_every_second_frame_as_predict_does(exp, clip, predicted):
    results = exp.explain(str(clip), vid_stride=2)
    assert [r.frame for r in results] == [1, 3, 5, 7, 9]  # as ultralytics' loader: the last frame of each pair
    assert_boxes_equal(results, predicted[2])
    with pytest.raises(YolocamError, match="vid_stride"):
        exp.explain(str(clip), vid_stride=0)


def test_stream_true_explains_frames_as_they_are_consumed(exp, clip):
    frames = exp.explain(str(clip), stream=True, vid_stride=5)
    assert not isinstance(frames, list)
    first = next(frames)
    assert first.frame == 4 and first.image.shape == (SIDE, SIDE, 3)
    assert [r.frame for r in frames] == [9]


def test_export_writes_frames_video_and_manifest(exp, clip, tmp_path):
    out = tmp_path / "out"
    counts = exp.export(str(clip), out, vid_stride=2)
    assert counts["frames"] == 5 and counts["errors"] == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] is True
    [video] = manifest["videos"]
    assert video["stem"] == "clip" and video["video"] == "clip.mp4" and video["frames"] == 5
    assert video["vid_stride"] == 2 and video["fps"] == pytest.approx(5.0)
    assert [img["frame"] for img in manifest["images"]] == [1, 3, 5, 7, 9]
    for img in manifest["images"]:
        assert img["stem"] == f"clip/frames/{img['frame']:06d}" and img["source"] == str(clip)
        with np.load(out / img["heatmaps"]) as npz:
            assert len(npz["heatmaps"]) == len(img["detections"])
        assert all((out / d["overlay"]).is_file() for d in img["detections"])
    frames = read_video(out / "clip.mp4")
    assert len(frames) == 5 and frames[0].shape == (SIDE, SIDE, 3)
    assert not [p for p in out.iterdir() if p.name.startswith(".") and p.name != ".yolocam-lock"]  # no temporaries
    loaded = yolocam.load_output(out)  # frames read back like images
    assert [len(r.detections) for r in loaded] == [len(img["detections"]) for img in manifest["images"]]


# ------------------------------------------------------------------ CLI
def test_cli_explains_a_video_end_to_end(clip, predicted, tmp_path, capsys):
    out = tmp_path / "cli"
    rc, stdout, err = run(["explain", clip, "--out", out, "--imgsz", IMGSZ, "--html"], capsys)
    assert rc == 0, err
    assert f"{FRAMES} frames" in stdout and "clip.mp4" in stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["images"]) == FRAMES
    boxes = [[d["box"] for d in img["detections"]] for img in manifest["images"]]
    for ours, (theirs, _) in zip(boxes, predicted[1]):
        np.testing.assert_allclose(np.asarray(ours, np.float32).reshape(-1, 4), theirs, atol=1e-2)
    assert len(read_video(out / "clip.mp4")) == FRAMES
    assert (out / "index.html").is_file()
    # a rerun into the same folder removes what this one wrote, the video included
    rc, _, err = run(["explain", clip, "--out", out, "--imgsz", IMGSZ, "--vid-stride", "5", "--exist-ok"], capsys)
    assert rc == 0, err
    assert sorted(p.name for p in (out / "clip" / "frames").iterdir()) == ["000004", "000009"]
    assert len(read_video(out / "clip.mp4")) == 2


@pytest.fixture(scope="module")
def tracked(clip, tmp_path_factory) -> Path:
    """`yolocam explain clip.mp4 --track --html`, uninterrupted."""
    pytest.importorskip("lap")
    out = tmp_path_factory.mktemp("tracked") / "track"
    assert main(["explain", str(clip), "--out", str(out), "--imgsz", str(IMGSZ), "--track", "--html"]) == 0
    return out


def test_cli_tracks_write_track_ids_and_table(tracked):
    out = tracked
    manifest = json.loads((out / "manifest.json").read_text())
    ids = [d.get("track") for img in manifest["images"] for d in img["detections"]]
    assert any(i is not None for i in ids)
    lines = (out / "clip" / "tracks.csv").read_text().splitlines()
    assert lines[0] == "track,class,name,frames,first_frame,last_frame,mean_conf,stability,mean_box_iou"
    rows = [dict(zip(lines[0].split(","), line.split(","))) for line in lines[1:]]
    assert {int(r["track"]) for r in rows} == {i for i in ids if i is not None}
    longest = max(rows, key=lambda r: int(r["frames"]))
    assert int(longest["frames"]) >= FRAMES // 2 and -1 <= float(longest["stability"]) <= 1
    with np.load(out / "clip" / "tracks" / f"{int(longest['track']):06d}.npz") as npz:
        assert npz["maps"].shape[0] == int(longest["frames"]) == len(npz["frames"])
    strip = cv2.imread(str(out / "clip" / "tracks" / f"{int(longest['track']):06d}.jpg"))  # its crops side by side
    assert strip is not None and strip.shape[1] >= int(longest["frames"]) * 96
    page = (out / "index.html").read_text()  # the gallery: a section of the tracks' strips, cards name their track
    assert "Tracks of clip" in page and f'clip/tracks/{int(longest["track"]):06d}.jpg' in page
    assert f'track #{int(longest["track"])}</span>' in page


def test_cli_unknown_tracker_is_one_line(clip, tmp_path, capsys):
    rc, _, err = run(["explain", clip, "--out", tmp_path / "t", "--track", "--tracker", "nosuch.yaml"], capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "tracker 'nosuch.yaml' not found" in err


def test_missing_webcam_is_one_line_and_leaves_no_folder(tmp_path, capsys):
    out = tmp_path / "cam"
    rc, _, err = run(["explain", "9", "--out", out], capsys)
    assert rc == 2
    assert err.strip().splitlines() == ["yolocam: error: webcam 9 cannot be opened (no camera at index 9 on this "
                                        "machine, or it is in use)"]
    assert not out.exists()


def test_missing_video_and_missing_package_are_one_line(tmp_path, capsys):
    rc, _, err = run(["explain", tmp_path / "nope.mp4", "--out", tmp_path / "o"], capsys)
    assert rc == 2 and err.strip().splitlines() == [f"yolocam: error: video not found: {tmp_path / 'nope.mp4'}"]
    import importlib.util

    if importlib.util.find_spec("mss") is None:  # ultralytics would pip-install it: refused instead
        rc, _, err = run(["explain", "screen", "--out", tmp_path / "s"], capsys)
        assert rc == 2 and len(err.strip().splitlines()) == 1 and "needs the Python package 'mss'" in err


def test_interrupt_leaves_a_valid_manifest_and_video_of_the_frames_done(clip, tmp_path, capsys, monkeypatch):
    import yolocam.explain.video as video

    real = video.iter_explanations

    def interrupted(*args, **kwargs):
        for k, result in enumerate(real(*args, **kwargs)):
            if k == 4:
                raise KeyboardInterrupt
            yield result

    monkeypatch.setattr(video, "iter_explanations", interrupted)
    out = tmp_path / "int"
    rc, _, err = run(["explain", clip, "--out", out, "--imgsz", IMGSZ], capsys)
    assert rc == 130 and "interrupted" in err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] is False
    assert [img["frame"] for img in manifest["images"]] == [0, 1, 2, 3]
    assert all((out / img["heatmaps"]).is_file() for img in manifest["images"])
    assert manifest["videos"][0]["frames"] == 4 and len(read_video(out / "clip.mp4")) == 4


def interrupt_after(monkeypatch, frames: int) -> None:
    """The next run stops with Ctrl-C (KeyboardInterrupt) once `frames` frames were explained."""
    import yolocam.explain.video as video

    real = video.iter_explanations

    def interrupted(*args, **kwargs):
        for k, result in enumerate(real(*args, **kwargs)):
            if k == frames:
                raise KeyboardInterrupt
            yield result

    monkeypatch.setattr(video, "iter_explanations", interrupted)


def test_resume_continues_an_interrupted_video_as_if_uninterrupted(clip, tracked, tmp_path, capsys, monkeypatch):
    import yolocam.explain.video as video

    out = tmp_path / "resumed"
    argv = ["explain", clip, "--out", out, "--imgsz", IMGSZ, "--track", "--html"]
    with monkeypatch.context() as m:
        interrupt_after(m, 4)
        assert run(argv, capsys)[0] == 130
    first = json.loads((out / "manifest.json").read_text())
    assert [img["frame"] for img in first["images"]] == [0, 1, 2, 3] and first["complete"] is False
    kept = {img["heatmaps"]: (out / img["heatmaps"]).stat().st_mtime_ns for img in first["images"]}
    explained = []
    from yolocam.explain.explainer import Explainer

    original = Explainer.iter_explain

    def counting(self, entries, **kw):
        for r in original(self, entries, **kw):
            explained.append(r.frame)
            yield r

    monkeypatch.setattr(Explainer, "iter_explain", counting)
    rc, stdout, err = run(argv + ["--resume"], capsys)
    assert rc == 0, err
    assert explained == [4, 5, 6, 7, 8, 9]  # the frames done are not explained again
    assert f"{FRAMES} frames (4 kept from the earlier run)" in stdout and "4 frames done by the earlier run kept" in err
    assert {rel: (out / rel).stat().st_mtime_ns for rel in kept} == kept  # nor written again
    ours, theirs = (json.loads((o / "manifest.json").read_text()) for o in (out, tracked))
    assert ours["complete"] is True
    assert ours["images"] == theirs["images"]  # boxes, track ids, file names: as the uninterrupted run's
    assert ours["videos"] == theirs["videos"] and sorted(ours["files"]) == sorted(theirs["files"])
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and p.name != ".yolocam-lock")
    assert files == sorted(p.relative_to(tracked).as_posix() for p in tracked.rglob("*")
                           if p.is_file() and p.name != ".yolocam-lock")
    for rel in files:  # every file as the uninterrupted run wrote it: the annotated video, tracks.csv, strips, gallery
        if rel.endswith(".npz"):  # (the zip members' times differ)
            with np.load(out / rel) as a, np.load(tracked / rel) as b:
                assert sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a), rel
        elif rel != "manifest.json":
            assert (out / rel).read_bytes() == (tracked / rel).read_bytes(), rel
    assert len(read_video(out / "clip.mp4")) == FRAMES  # the whole video, playable by OpenCV


def test_resume_refuses_other_settings_in_one_line(clip, tmp_path, capsys, monkeypatch):
    out = tmp_path / "other"
    with monkeypatch.context() as m:
        interrupt_after(m, 2)
        assert run(["explain", clip, "--out", out, "--imgsz", IMGSZ, "--vid-stride", 2], capsys)[0] == 130
    rc, _, err = run(["explain", clip, "--out", out, "--imgsz", IMGSZ, "--resume"], capsys)
    assert rc == 2 and [line for line in err.splitlines() if "error" in line] == [  # (after the model's note)
        f"yolocam: error: cannot resume {clip}: the earlier run used vid_stride=2, this one vid_stride=1; pass the "
        "same options, or rerun without --resume"]
    assert [img["frame"] for img in json.loads((out / "manifest.json").read_text())["images"]] == [1, 3]


def test_images_and_a_video_in_one_run(clip, tmp_path, capsys):
    image = tmp_path / "scene.png"
    cv2.imwrite(str(image), make_scene(1, size=(SIDE, SIDE)).image)
    out = tmp_path / "mixed"
    rc, stdout, err = run(["explain", image, clip, "--out", out, "--imgsz", IMGSZ, "--vid-stride", "5"], capsys)
    assert rc == 0, err
    assert "1 images, 2 frames" in stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert [img["stem"] for img in manifest["images"]] == ["scene", "clip/frames/000004", "clip/frames/000009"]
    assert "frame" not in manifest["images"][0]


# ------------------------------------------------------------------ URLs
@pytest.fixture(scope="module")
def server(clip, tmp_path_factory):
    """An HTTP server on 127.0.0.1 serving a folder with an image and the clip (started here, stopped after)."""
    root = tmp_path_factory.mktemp("served")
    cv2.imwrite(str(root / "scene.png"), make_scene(2, size=(SIDE, SIDE)).image)
    (root / "clip.mp4").write_bytes(clip.read_bytes())

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_image_url_is_fetched_not_mangled(exp, server):
    root, base = server
    [result] = exp.explain(f"{base}/scene.png")
    assert result.path == f"{base}/scene.png"  # not http:/127.0.0.1...
    [local] = exp.explain(str(root / "scene.png"))
    assert [d.box for d in result.detections] == [d.box for d in local.detections]
    with pytest.raises(YolocamError, match="HTTP 404"):
        exp.explain(f"{base}/missing.png")


def test_unreachable_url_and_stream_are_one_line(tmp_path, capsys):
    for source, text in (("http://127.0.0.1:9/a.jpg", "cannot fetch http://127.0.0.1:9/a.jpg"),
                         ("rtsp://127.0.0.1:9/live", "stream cannot be opened: rtsp://127.0.0.1:9/live")):
        out = tmp_path / "u"
        rc, _, err = run(["explain", source, "--out", out], capsys)
        assert rc == 2 and len(err.strip().splitlines()) == 1 and text in err, err
        assert not out.exists()


def test_video_url_is_explained_frame_by_frame(server, predicted, tmp_path, capsys, monkeypatch):
    _, base = server
    monkeypatch.chdir(tmp_path)  # nothing may be downloaded into the working folder
    out = tmp_path / "url"
    rc, stdout, err = run(["explain", f"{base}/clip.mp4", "--out", out, "--imgsz", IMGSZ], capsys)
    assert rc == 0, err
    manifest = json.loads((out / "manifest.json").read_text())
    assert {img["path"] for img in manifest["images"]} == {f"{base}/clip.mp4"}
    boxes = [[d["box"] for d in img["detections"]] for img in manifest["images"]]
    for ours, (theirs, _) in zip(boxes, predicted[1], strict=True):
        np.testing.assert_allclose(np.asarray(ours, np.float32).reshape(-1, 4), theirs, atol=1e-2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["url"]
    assert sorted(p.name for p in out.iterdir()) == ["clip", "clip.mp4", "manifest.json"]


# ------------------------------------------------------------------ track maths
def test_box_maps_stability_and_bounded_strips():
    from yolocam.output.tracks import STRIP_THUMBS, Track, box_map, map_correlation
    import torch

    heat = np.zeros((100, 120), np.float32)
    heat[20:60, 30:50] = 1.0
    inside = box_map(heat, [30, 20, 50, 60])
    assert inside.shape == (32, 32) and inside[1:-1, 1:-1].min() > 0.99  # the box's own pixels, whatever its size
    assert inside.min() >= 0.5  # edge cells: bilinear between the box's last pixel and the one outside it
    moved = np.roll(heat, (7, 11), axis=(0, 1))  # the object moved, and its box with it: the same box map
    np.testing.assert_allclose(box_map(moved, [41, 27, 61, 67]), inside, atol=1e-4)
    ramp = torch.linspace(0, 1, 64).view(8, 8)
    assert map_correlation(ramp, ramp) == pytest.approx(1.0)
    assert map_correlation(ramp, 1 - ramp) == pytest.approx(-1.0)
    assert map_correlation(ramp, torch.zeros(8, 8)) is None  # a zero map has nothing to correlate
    track = Track(1)
    for frame in range(1000):
        track.frames.append(frame)
        if track.wants_thumb():
            track.add_thumb(frame, np.zeros((4, 4, 3), np.uint8))
    kept = [f for f, _ in track.thumbs]
    assert len(kept) <= STRIP_THUMBS and kept[0] == 0 and len(set(np.diff(kept))) == 1  # evenly spaced


# ------------------------------------------------------------------ demo --video
def test_demo_video_writes_clip_annotated_video_tracks_and_gallery(tmp_path, capsys):
    pytest.importorskip("lap")
    from yolocam.demo.clips import clip_boxes

    out = tmp_path / "demo"
    rc, stdout, err = run(["demo", "--video", "--frames", 12, "--imgsz", IMGSZ, "--out", out], capsys)
    assert rc == 0, err
    assert "12 frames of moving shapes" in stdout and "tracks" in stdout
    assert len(read_video(out / "source.mp4")) == 12 and len(read_video(out / "shapes.mp4")) == 12
    manifest = json.loads((out / "manifest.json").read_text())
    assert {"source.mp4", "shapes.mp4", "index.html", "shapes/tracks.csv"} <= set(manifest["files"])
    lines = (out / "shapes" / "tracks.csv").read_text().splitlines()[1:]
    rows = [line.split(",") for line in lines]
    long_tracks = [r for r in rows if int(r[3]) >= 8]
    assert {int(r[1]) for r in long_tracks} == {0, 1, 2, 3}  # every shape followed over most of the clip
    truth = clip_boxes(0, frames=12)
    first = [d for d in manifest["images"][0]["detections"] if d["conf"] > 0.5]
    assert sorted(d["cls"] for d in first) == sorted(truth[0][1].tolist())
    assert (out / "index.html").is_file()
