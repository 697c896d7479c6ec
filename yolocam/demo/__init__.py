"""The demo world: the procedural scene generator and the bundled demo detectors (`weights/`)."""
