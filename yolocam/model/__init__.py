"""The model side: the adapter around an ultralytics model, detections kept with their anchors,
targets, layer selection and reshape transforms, and the hooks that capture layers."""

from . import contrast  # noqa: F401,E402  (registers the contrast:CLASS targets with targets.get_target)
