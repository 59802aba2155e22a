"""Non-maximum suppression with torchvision's compiled kernel, without importing torchvision.

Importing torchvision's Python package imports ``torch._dynamo`` (1.5 s here), which
face detection never uses: that was a fifth of the start-up of ``gemo extract``. The
kernel lives in torchvision's extension library, which is loaded here the way
torchvision loads it; where that file cannot be found or loaded (another layout or
platform), torchvision itself is imported. The results are torchvision's.

>>> keep = nms(boxes, scores, 0.5)                     # doctest: +SKIP
>>> keep = batched_nms(boxes, scores, image_of_box, 0.7)  # doctest: +SKIP
"""

import functools
import importlib.machinery
import importlib.util

import torch

_LIBRARIES = ("_C_stable", "_C")  # the extension's name: torchvision 0.29 on, and before
# Boxes above which batched_nms runs NMS per group instead of offsetting the groups apart,
# as torchvision decides (its numbers, from its benchmarks).
_PER_GROUP_ABOVE = {"cpu": 4000, "cuda": 100_000}


def nms(boxes, scores, iou_threshold):
    """Indices of ``boxes`` [n, 4] (x1, y1, x2, y2) kept by greedy NMS, best score first."""
    return _kernel()(boxes, scores, float(iou_threshold))


def batched_nms(boxes, scores, groups, iou_threshold):
    """NMS within each group (``groups`` [n] integer labels), as ``torchvision.ops.batched_nms``:
    indices kept, best score first."""
    if boxes.numel() > _PER_GROUP_ABOVE.get(boxes.device.type, 4000):
        keep = torch.zeros_like(scores, dtype=torch.bool)
        for group in torch.unique(groups):
            members = torch.where(groups == group)[0]
            keep[members[nms(boxes[members], scores[members], iou_threshold)]] = True
        kept = torch.where(keep)[0]
        return kept[scores[kept].sort(descending=True)[1]]
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    # Shift each group by more than the largest coordinate, so groups never overlap.
    offsets = groups.to(boxes) * (boxes.max() + torch.tensor(1).to(boxes))
    return nms(boxes + offsets[:, None], scores, iou_threshold)


@functools.cache
def _kernel():
    spec = importlib.util.find_spec("torchvision")
    if spec is not None and spec.submodule_search_locations:
        finder = importlib.machinery.FileFinder(
            spec.submodule_search_locations[0],
            (importlib.machinery.ExtensionFileLoader, importlib.machinery.EXTENSION_SUFFIXES))
        for name in _LIBRARIES:
            found = finder.find_spec(name)
            if found is None:
                continue
            try:
                torch.ops.load_library(found.origin)
                return torch.ops.torchvision.nms
            except (OSError, AttributeError, RuntimeError):
                break  # e.g. Windows, whose DLL folders torchvision sets up itself
    from torchvision.ops import nms as torchvision_nms

    return torchvision_nms
