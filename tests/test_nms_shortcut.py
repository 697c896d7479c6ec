"""NMS over the highest-scoring candidates first (`detections._greedy_nms`) keeps exactly the boxes NMS over
all candidates keeps, ties included, whatever the first share tried."""

import pytest
import torch
import torchvision

from yolocam.model.detections import _greedy_nms


@pytest.mark.parametrize("levels", [None, 7])  # distinct scores, or only 7 distinct values (many ties)
def test_greedy_nms_on_the_top_candidates_equals_nms_on_all(levels):
    gen = torch.Generator().manual_seed(0)
    for trial in range(12):
        n = int(torch.randint(50, 3000, (), generator=gen))
        xy = torch.rand(n, 2, generator=gen) * 600
        wh = torch.rand(n, 2, generator=gen) * (float(torch.rand((), generator=gen)) * 150 + 5)
        boxes = torch.cat([xy, xy + wh], 1)
        scores = torch.rand(n, generator=gen)
        if levels:
            scores = (scores * levels).floor() / levels
        index = torch.randperm(n, generator=gen)  # the candidates' anchors
        for max_det in (1, 10, 40, 300, 10_000):
            first = int(torch.randint(1, 2000, (), generator=gen))
            ref = index[torchvision.ops.nms(boxes, scores, 0.6)[:max_det]]
            got = _greedy_nms(boxes, scores, 0.6, max_det, index, first=first)
            assert torch.equal(got, ref), (trial, n, max_det, first)
