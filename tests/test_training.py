"""yolocam.training: explanation metrics per epoch without changing the training run."""

import csv

import cv2
import numpy as np
import pytest
from ultralytics import YOLO

from yolocam.errors import YolocamError
from yolocam.demo.scenes import write_dataset
from yolocam.evaluation.training import COLUMNS, CSV_NAME, PNG_NAME, SCALARS, add_explain_callbacks

EPOCHS = 2


@pytest.fixture(scope="session")
def runs(tmp_path_factory):
    """The same tiny training run (yolov8n YAML, 8 images, imgsz 64) without and with the callbacks."""
    root = tmp_path_factory.mktemp("train")
    data = write_dataset(root / "data", n_train=8, n_val=4, seed=3)
    out = {}
    for name in ("plain", "explained"):
        model = YOLO("yolov8n.yaml", task="detect")
        callback = None
        if name == "explained":  # conf 0: an untrained model's tiny scores still give boxes to explain
            callback = add_explain_callbacks(model, samples=3, imgsz=64, conf=0.0, max_det=10, faithful=1, steps=4,
                                             tensorboard=True, panels=2)
        model.train(data=str(data), epochs=EPOCHS, imgsz=64, batch=4, workers=0, device="cpu", project=str(root),
                    name=name, exist_ok=True, amp=False, plots=False, pretrained=False, seed=0, deterministic=True,
                    verbose=False)
        out[name] = (root / name, callback)
    return out


def read_csv(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


def test_one_row_per_epoch(runs):
    folder, callback = runs["explained"]
    rows = read_csv(folder / CSV_NAME)
    assert [int(r["epoch"]) for r in rows] == list(range(1, EPOCHS + 1))  # the final eval adds no row
    assert tuple(rows[0]) == COLUMNS
    for r in rows:
        assert int(r["images"]) == 3 and int(r["detections"]) > 0
        assert int(r["tp"]) + int(r["fp"]) == int(r["detections"])
    assert len(callback.rows) == EPOCHS
    plot = cv2.imread(str(folder / PNG_NAME))
    assert plot is not None and plot.shape[2] == 3
    assert not (runs["plain"][0] / CSV_NAME).exists()


def test_training_results_unchanged(runs):
    plain, explained = read_csv(runs["plain"][0] / "results.csv"), read_csv(runs["explained"][0] / "results.csv")
    assert list(plain[0]) == list(explained[0])  # same columns: nothing added to ultralytics' metrics
    assert len(plain) == len(explained) == EPOCHS
    for a, b in zip(plain, explained):  # and the same values (deterministic CPU run), wall time aside
        assert {k: v for k, v in a.items() if k != "time"} == {k: v for k, v in b.items() if k != "time"}


def test_rejects_non_yolo_objects():
    with pytest.raises(YolocamError, match="ultralytics.YOLO"):
        add_explain_callbacks(object())
    with pytest.raises(YolocamError, match="samples"):
        add_explain_callbacks(YOLO("yolov8n.yaml", task="detect"), samples=0)


def test_tensorboard_gets_the_epoch_metrics_and_heatmap_panels(runs):
    """Real event files in the run folder, read back with TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder, callback = runs["explained"]
    assert list(folder.glob("events.out.tfevents.*"))
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    tags = acc.Tags()
    for key in SCALARS:
        if key in ("deletion_auc", "insertion_auc", "fp_energy", "tp_pointing", "tp_energy", "tp_energy_other"):
            continue  # NaN when an epoch has no such prediction (then not logged)
        events = acc.Scalars(f"yolocam/{key}")
        assert [e.step for e in events] == list(range(1, EPOCHS + 1))
        assert [e.value for e in events] == pytest.approx([float(r[key]) for r in callback.rows])
    assert "yolocam/heatmaps" in tags["images"]
    images = acc.Images("yolocam/heatmaps")
    assert [e.step for e in images] == list(range(1, EPOCHS + 1))
    panel = cv2.imdecode(np.frombuffer(images[-1].encoded_image_string, np.uint8), cv2.IMREAD_COLOR)
    assert panel is not None and panel.shape[0] > 16 and panel.shape[1] > panel.shape[0]  # two panels side by side
    from ultralytics.utils import SETTINGS

    if not SETTINGS.get("tensorboard"):  # ultralytics' own TensorBoard logging is off: nothing of ours either
        assert not list(runs["plain"][0].glob("events.out.tfevents.*"))


@pytest.mark.parametrize("task,cfg", [("segment", "yolov8n-seg.yaml"), ("obb", "yolov8n-obb.yaml")])
def test_task_models_get_one_row_per_epoch(tmp_path, task, cfg):
    """Seg and OBB training runs get the same per-epoch rows (boxes: OBB labels and detections as hulls)."""
    from yolocam.demo.task_labels import write_task_dataset

    data = write_task_dataset(tmp_path / "data", task, n_train=4, n_val=2, seed=3)
    model = YOLO(cfg, task=task)
    add_explain_callbacks(model, samples=2, imgsz=64, conf=0.0, max_det=5, faithful=0, steps=4)
    model.train(data=str(data), epochs=1, imgsz=64, batch=2, workers=0, device="cpu", project=str(tmp_path),
                name="run", exist_ok=True, amp=False, plots=False, pretrained=False, seed=0, verbose=False)
    rows = read_csv(tmp_path / "run" / "yolocam_metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [1] and int(rows[0]["images"]) == 2
    assert int(rows[0]["detections"]) > 0


def test_classification_models_are_refused_in_one_line():
    with pytest.raises(YolocamError, match="got a classification model"):
        add_explain_callbacks(YOLO("yolov8n-cls.yaml", task="classify"))
