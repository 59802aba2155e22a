"""MTCNN's P-Net, R-Net and O-Net (Zhang et al. 2016), laid out as the weight files that
ship inside facenet-pytorch expect them: the same layer names, shapes and operations.

gemo builds them here instead of importing facenet-pytorch's classes: importing any of
facenet-pytorch imports torchvision, whose ``ops`` import ``torch._dynamo`` (1.5 s of
every extraction's start-up, in each process that detects faces). The outputs are
facenet-pytorch's, bit for bit (tests/test_faces_mtcnn.py compares them).

Each net returns its box offsets (and O-Net its ten landmark values) before the face
probability, as facenet-pytorch's do:

>>> reg, prob = build("pnet")(images)           # doctest: +SKIP
>>> reg, marks, prob = build("onet")(crops)     # doctest: +SKIP
"""

import torch
from torch import nn

# Per net: stages of (input, output, kernel or None for a dense layer, max-pool (size, stride)
# or None), then the output sizes of its heads; the face-probability head comes first.
LAYOUTS = {
    "pnet": ([(3, 10, 3, (2, 2)), (10, 16, 3, None), (16, 32, 3, None)], (2, 4)),
    "rnet": ([(3, 28, 3, (3, 2)), (28, 48, 3, (3, 2)), (48, 64, 2, None), (576, 128, None, None)],
             (2, 4)),
    "onet": ([(3, 32, 3, (3, 2)), (32, 64, 3, (3, 2)), (64, 64, 3, (2, 2)), (64, 128, 2, None),
              (1152, 256, None, None)], (2, 4, 10)),
}


class CascadeNet(nn.Module):
    """One of the three nets: stage i is ``conv{i}`` or ``dense{i}``, ``prelu{i}`` and maybe
    ``pool{i}``; the heads after n stages are ``conv{n+1}_j`` (P-Net) or ``dense{n+1}_j``."""

    def __init__(self, stages, heads):
        super().__init__()
        self.stages = []
        for number, (inputs, outputs, kernel, pool) in enumerate(stages, 1):
            kind = "dense" if kernel is None else "conv"
            layer = nn.Linear(inputs, outputs) if kernel is None else nn.Conv2d(inputs, outputs,
                                                                                kernel)
            self.add_module(f"{kind}{number}", layer)
            self.add_module(f"prelu{number}", nn.PReLU(outputs))
            if pool is not None:
                self.add_module(f"pool{number}", nn.MaxPool2d(*pool, ceil_mode=True))
            self.stages.append((kind, number, pool is not None))
        kind = "conv" if stages[-1][2] is not None else "dense"
        width = stages[-1][1]
        self.heads = [f"{kind}{len(stages) + 1}_{j}" for j in range(1, len(heads) + 1)]
        for name, outputs in zip(self.heads, heads):
            self.add_module(name, nn.Conv2d(width, outputs, 1) if kind == "conv"
                            else nn.Linear(width, outputs))

    def forward(self, x):
        for kind, number, pooled in self.stages:
            if kind == "dense" and x.dim() == 4:
                # The Caffe weights read a feature map column by column: (N, W, H, C) order.
                x = x.permute(0, 3, 2, 1).contiguous()
                x = x.view(x.shape[0], -1)
            x = getattr(self, f"prelu{number}")(getattr(self, f"{kind}{number}")(x))
            if pooled:
                x = getattr(self, f"pool{number}")(x)
        prob, *rest = (getattr(self, name)(x) for name in self.heads)
        return (*rest, torch.softmax(prob, dim=1))


def build(part):
    """``"pnet"``, ``"rnet"`` or ``"onet"`` with random weights, in eval mode."""
    stages, heads = LAYOUTS[part]
    return CascadeNet(stages, heads).eval()
