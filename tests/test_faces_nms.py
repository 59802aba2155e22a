"""gemo.faces.nms: torchvision's NMS kernel, loaded without importing torchvision."""

import pytest
import torch
import torchvision.ops

from gemo.faces import nms


def _boxes(count, groups, seed):
    generator = torch.Generator().manual_seed(seed)
    corners = torch.rand(count, 2, generator=generator) * 300
    sides = 10 + torch.rand(count, 2, generator=generator) * 60
    scores = torch.rand(count, generator=generator)
    owner = torch.randint(0, groups, (count,), generator=generator)
    return torch.cat([corners, corners + sides], 1), scores, owner


@pytest.mark.parametrize("count", [0, 1, 200, 999, 1001, 3000])  # over 1000 boxes: per group
def test_batched_nms_is_torchvisions(count):
    boxes, scores, owner = _boxes(count, 5, seed=count)
    for threshold in (0.3, 0.5, 0.7):
        expected = torchvision.ops.batched_nms(boxes, scores, owner, threshold)
        assert torch.equal(nms.batched_nms(boxes, scores, owner, threshold), expected)


def test_nms_keeps_the_best_of_overlapping_boxes_first():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0], [50.0, 50.0, 60.0, 60.0],
                          [0.0, 0.0, 10.0, 10.0]])
    scores = torch.tensor([0.5, 0.9, 0.7, 0.4])
    assert nms.nms(boxes, scores, 0.5).tolist() == [1, 2]
    boxes, scores, _ = _boxes(500, 1, seed=3)
    assert torch.equal(nms.nms(boxes, scores, 0.4), torchvision.ops.nms(boxes, scores, 0.4))


def test_where_the_extension_library_is_not_found_torchvision_itself_is_imported(monkeypatch):
    monkeypatch.setattr(nms, "_LIBRARIES", ("_no_such_library",))
    nms._kernel.cache_clear()
    try:
        assert nms._kernel() is torchvision.ops.nms
        boxes, scores, owner = _boxes(300, 3, seed=5)
        expected = torchvision.ops.batched_nms(boxes, scores, owner, 0.5)
        assert torch.equal(nms.batched_nms(boxes, scores, owner, 0.5), expected)
    finally:
        nms._kernel.cache_clear()  # the next caller loads the library again
