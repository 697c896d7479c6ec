"""The model side: the adapter around an ultralytics model, detections kept with their anchors,
targets, layer selection and reshape transforms, and the hooks that capture layers."""
