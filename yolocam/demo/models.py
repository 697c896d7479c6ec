"""The bundled demo detectors (trained on the package's generated shape and evidence scenes)."""

from __future__ import annotations

from pathlib import Path

from ..errors import YolocamError

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEMO_MODELS = {
    "demo-v8": "demo-v8.pt",  # YOLOv8n-style, NMS head
    "demo-26": "demo-26.pt",  # YOLO26n-style, end-to-end head
    "demo-marks": "demo-marks.pt",  # YOLOv8n-style, evidence scenes: the class is decided by a small mark
    "demo-seg": "demo-seg.pt",  # the demo-v8 network with a Segment head
    "demo-pose": "demo-pose.pt",  # the demo-v8 network with a Pose head (5 keypoints per shape)
    "demo-obb": "demo-obb.pt",  # the demo-v8 network with an OBB head (each shape's own rotated frame)
    "demo-cls": "demo-cls.pt",  # a YOLOv8-cls network: names the shape in the middle of a crop
}
DEFAULT_MODEL = "demo-v8"
SHAPE_CLASSES = ("circle", "square", "triangle", "cross")  # = scenes.CLASS_NAMES (kept here: no cv2 import)
MARK_CLASSES = ("dot", "ring", "plus")  # = evidence.EVIDENCE_CLASSES
SHAPE_KEYPOINTS = ("centre", "top", "right", "bottom", "left")  # = task_labels.KEYPOINT_NAMES
# name -> (what it is, its class names), for `yolocam methods` and the CLI's notes on the model in use
MODEL_INFO = {
    "demo-v8": ("YOLOv8n-style, NMS head, trained on generated shape scenes", SHAPE_CLASSES),
    "demo-26": ("YOLO26n-style, end-to-end head, trained on generated shape scenes", SHAPE_CLASSES),
    "demo-marks": ("YOLOv8n-style, NMS head, trained on evidence scenes (a tile's small mark decides its class)",
                   MARK_CLASSES),
    "demo-seg": ("YOLOv8n-style segmentation (masks of the visible shape), trained on generated shape scenes",
                 SHAPE_CLASSES),
    "demo-pose": (f"YOLOv8n-style pose, 5 keypoints per shape ({', '.join(SHAPE_KEYPOINTS)}), trained on generated "
                  "shape scenes", SHAPE_CLASSES),
    "demo-obb": ("YOLOv8n-style oriented boxes (each shape's own rotated frame), trained on generated shape scenes",
                 SHAPE_CLASSES),
    "demo-cls": ("YOLOv8n-cls-style classifier of 128 px crops (the shape in the middle), image-level maps",
                 SHAPE_CLASSES),
}
TASK_MODELS = {"demo-seg": "segment", "demo-pose": "pose", "demo-obb": "obb", "demo-cls": "classify"}
EVIDENCE_MODELS = ("demo-marks",)  # `yolocam demo` shows them an evidence scene instead of a shape scene


def list_models() -> list[str]:
    """Names of the bundled demo detectors (usable as `Explainer(model=name)`)."""
    return list(DEMO_MODELS)


def demo_model_path(name: str = DEFAULT_MODEL) -> Path:
    """Path of a bundled detector's weights; raises if the name is unknown or the file is missing."""
    if name not in DEMO_MODELS:
        raise YolocamError(f"unknown demo model {name!r}; expected one of {', '.join(DEMO_MODELS)}")
    path = WEIGHTS_DIR / DEMO_MODELS[name]
    if not path.is_file():
        raise YolocamError(f"bundled weights missing: {path} (reinstall yolocam, or run weights_scripts/)")
    return path


def model_source(model):
    """`model` with None (the default demo detector) and demo names replaced by their weights' path."""
    if model is None:
        return demo_model_path()
    if isinstance(model, str) and model in DEMO_MODELS:
        return demo_model_path(model)
    return model
