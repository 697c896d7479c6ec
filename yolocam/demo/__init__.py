"""The demo world: the procedural scene generators and the bundled demo detectors (`weights/`).

`scenes`: shape scenes (circle, square, triangle, cross) for the shape detectors and `yolocam val`;
`evidence`: evidence scenes (tiles whose class is decided by a small mark: dot, ring, plus), with the
mark's centre, diameter and mask as ground truth for the evidence metrics.
"""
