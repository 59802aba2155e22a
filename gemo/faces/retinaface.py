"""RetinaFace with a mobilenet0.25 backbone, as trained by biubug6/Pytorch_Retinaface.

The layers carry the names of that project's checkpoint ``mobilenet0.25_Final.pth``
(saved from ``DataParallel``: every key starts with ``module.``, stripped on
load), so the public file loads as is. The network predicts, for each prior
box (anchor) of three feature levels (strides 8, 16, 32; two square anchors per
cell: 16/32, 64/128, 256/512 pixels), a face score, box offsets and five
landmark offsets; :func:`detect_batch` decodes them and removes overlaps (NMS).

The weights cannot be downloaded by gemo: put ``mobilenet0.25_Final.pth`` in
``$GEMO_HOME/weights`` (or the torch hub checkpoints folder) or pass its path.

>>> net, source = load_retinaface()                         # doctest: +SKIP
>>> found = detect_batch(net, images_uint8_rgb, threshold=0.8)  # doctest: +SKIP
"""

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gemo import pretrained
from gemo.faces.nms import nms
from gemo.files import sha256_file

WEIGHTS = "retinaface.mobilenet0.25"
MIN_SIZES = ((16, 32), (64, 128), (256, 512))
STEPS = (8, 16, 32)
VARIANCE = (0.1, 0.2)
MEAN_BGR = (104.0, 117.0, 123.0)  # the network was trained on BGR pixels minus this mean

# No SHA-256 is published for this file: it is checked by loading it into the network.
pretrained.register(pretrained.WeightFile(
    WEIGHTS, "mobilenet0.25_Final.pth", None,
    "https://drive.google.com/open?id=1oZRSG0ZegbVkVwUd8wUIQx8W7yfZ_ki1", None,
    "RetinaFace mobilenet0.25 (biubug6/Pytorch_Retinaface, trained on WIDER FACE)",
    mean=MEAN_BGR, std=(1.0, 1.0, 1.0), licence="MIT (biubug6/Pytorch_Retinaface)"))


def _conv_bn(inp, out, stride=1, leaky=0.0, kernel=3, relu=True):
    layers = [nn.Conv2d(inp, out, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(out)]
    if relu:
        layers.append(nn.LeakyReLU(negative_slope=leaky, inplace=True))
    return nn.Sequential(*layers)


def _conv_dw(inp, out, stride, leaky=0.1):
    """Depthwise 3x3 then pointwise 1x1, each with batch norm and leaky ReLU."""
    return nn.Sequential(
        nn.Conv2d(inp, inp, 3, stride, 1, groups=inp, bias=False), nn.BatchNorm2d(inp),
        nn.LeakyReLU(negative_slope=leaky, inplace=True),
        nn.Conv2d(inp, out, 1, 1, 0, bias=False), nn.BatchNorm2d(out),
        nn.LeakyReLU(negative_slope=leaky, inplace=True),
    )


class MobileNetV1(nn.Module):
    """MobileNet v1 at width 0.25, cut after its three stages (strides 8, 16, 32)."""

    def __init__(self):
        super().__init__()
        self.stage1 = nn.Sequential(
            _conv_bn(3, 8, 2, leaky=0.1), _conv_dw(8, 16, 1), _conv_dw(16, 32, 2),
            _conv_dw(32, 32, 1), _conv_dw(32, 64, 2), _conv_dw(64, 64, 1),
        )
        self.stage2 = nn.Sequential(_conv_dw(64, 128, 2), *[_conv_dw(128, 128, 1) for _ in range(5)])
        self.stage3 = nn.Sequential(_conv_dw(128, 256, 2), _conv_dw(256, 256, 1))

    def forward(self, x):
        c1 = self.stage1(x)
        c2 = self.stage2(c1)
        return [c1, c2, self.stage3(c2)]


class FPN(nn.Module):
    """Feature pyramid: 1x1 lateral convs, nearest upsampling from coarse to fine, 3x3 merges."""

    def __init__(self, in_channels, out_channels, leaky=0.1):
        super().__init__()
        self.output1 = _conv_bn(in_channels[0], out_channels, leaky=leaky, kernel=1)
        self.output2 = _conv_bn(in_channels[1], out_channels, leaky=leaky, kernel=1)
        self.output3 = _conv_bn(in_channels[2], out_channels, leaky=leaky, kernel=1)
        self.merge1 = _conv_bn(out_channels, out_channels, leaky=leaky)
        self.merge2 = _conv_bn(out_channels, out_channels, leaky=leaky)

    def forward(self, features):
        p1, p2, p3 = self.output1(features[0]), self.output2(features[1]), self.output3(features[2])
        p2 = self.merge2(p2 + F.interpolate(p3, size=p2.shape[-2:], mode="nearest"))
        p1 = self.merge1(p1 + F.interpolate(p2, size=p1.shape[-2:], mode="nearest"))
        return [p1, p2, p3]


class SSH(nn.Module):
    """Context module: 3x3, "5x5" and "7x7" receptive fields (stacked 3x3 convs), concatenated."""

    def __init__(self, channels, leaky=0.1):
        super().__init__()
        half, quarter = channels // 2, channels // 4
        self.conv3X3 = _conv_bn(channels, half, relu=False)
        self.conv5X5_1 = _conv_bn(channels, quarter, leaky=leaky)
        self.conv5X5_2 = _conv_bn(quarter, quarter, relu=False)
        self.conv7X7_2 = _conv_bn(quarter, quarter, leaky=leaky)
        self.conv7x7_3 = _conv_bn(quarter, quarter, relu=False)  # lower-case x, as in the file

    def forward(self, x):
        branch = self.conv5X5_1(x)
        return F.relu(torch.cat(
            [self.conv3X3(x), self.conv5X5_2(branch), self.conv7x7_3(self.conv7X7_2(branch))], dim=1))


class _Head(nn.Module):
    """A 1x1 conv giving ``values`` numbers per anchor, flattened to [batch, anchors, values]."""

    def __init__(self, channels, anchors, values):
        super().__init__()
        self.values = values
        self.conv1x1 = nn.Conv2d(channels, anchors * values, kernel_size=1)

    def forward(self, x):
        # [B, A*V, H, W] -> [B, H*W*A, V]: anchors ordered row, column, anchor (as the priors).
        return self.conv1x1(x).permute(0, 2, 3, 1).reshape(x.shape[0], -1, self.values)


class RetinaFace(nn.Module):
    """The mobilenet0.25 RetinaFace; ``forward`` gives (box offsets, face probability, landmarks)."""

    def __init__(self, channels=64, anchors=2):
        super().__init__()
        self.body = MobileNetV1()
        self.fpn = FPN([64, 128, 256], channels)
        self.ssh1, self.ssh2, self.ssh3 = SSH(channels), SSH(channels), SSH(channels)
        self.ClassHead = nn.ModuleList([_Head(channels, anchors, 2) for _ in STEPS])
        self.BboxHead = nn.ModuleList([_Head(channels, anchors, 4) for _ in STEPS])
        self.LandmarkHead = nn.ModuleList([_Head(channels, anchors, 10) for _ in STEPS])

    def forward(self, x):
        levels = self.fpn(self.body(x))
        features = [self.ssh1(levels[0]), self.ssh2(levels[1]), self.ssh3(levels[2])]
        boxes = torch.cat([head(f) for head, f in zip(self.BboxHead, features)], dim=1)
        logits = torch.cat([head(f) for head, f in zip(self.ClassHead, features)], dim=1)
        landmarks = torch.cat([head(f) for head, f in zip(self.LandmarkHead, features)], dim=1)
        return boxes, logits.softmax(dim=-1)[..., 1], landmarks


def priors(height, width):
    """Anchors ``[n, 4]`` (centre x, centre y, width, height) as fractions of the image size."""
    rows = []
    for step, sizes in zip(STEPS, MIN_SIZES):
        fh, fw = math.ceil(height / step), math.ceil(width / step)
        cy, cx = torch.meshgrid((torch.arange(fh) + 0.5) * step / height,
                                (torch.arange(fw) + 0.5) * step / width, indexing="ij")
        for_level = [torch.stack([cx, cy, torch.full_like(cx, s / width), torch.full_like(cy, s / height)],
                                 dim=-1) for s in sizes]
        rows.append(torch.stack(for_level, dim=2).reshape(-1, 4))  # row, column, anchor
    return torch.cat(rows)


def decode(offsets, anchors):
    """Box offsets -> ``[n, 4]`` corners (x1, y1, x2, y2), in fractions of the image."""
    centre = anchors[:, :2] + offsets[:, :2] * VARIANCE[0] * anchors[:, 2:]
    size = anchors[:, 2:] * torch.exp(offsets[:, 2:] * VARIANCE[1])
    return torch.cat([centre - size / 2, centre + size / 2], dim=1)


def decode_landmarks(offsets, anchors):
    """Landmark offsets ``[n, 10]`` -> ``[n, 5, 2]`` points, in fractions of the image."""
    return anchors[:, None, :2] + offsets.reshape(-1, 5, 2) * VARIANCE[0] * anchors[:, None, 2:]


@torch.no_grad()
def detect_batch(net, images, *, threshold=0.8, nms_threshold=0.4, top_k=5000, keep_top_k=750):
    """Detect faces in ``images`` (uint8 RGB ``[B, H, W, 3]``, one size).

    Returns one ``(boxes [n, 4], scores [n], landmarks [n, 5, 2])`` of float32
    numpy arrays in pixels per image, highest score first.
    """
    device = next(net.parameters()).device
    x = torch.as_tensor(np.ascontiguousarray(images[..., ::-1]), device=device).float()  # RGB -> BGR
    x = (x - torch.tensor(MEAN_BGR, device=device)).permute(0, 3, 1, 2)
    height, width = x.shape[-2:]
    offsets, scores, landmark_offsets = net(x)
    anchors = priors(height, width).to(device)
    scale = torch.tensor([width, height], device=device, dtype=torch.float32)
    found = []
    for b in range(x.shape[0]):
        keep = torch.nonzero(scores[b] > threshold).squeeze(1)
        keep = keep[scores[b, keep].argsort(descending=True)[:top_k]]
        boxes = decode(offsets[b, keep], anchors[keep]) * scale.repeat(2)
        points = decode_landmarks(landmark_offsets[b, keep], anchors[keep]) * scale
        kept = nms(boxes, scores[b, keep], nms_threshold)[:keep_top_k]
        found.append(tuple(a.cpu().numpy().astype(np.float32)
                           for a in (boxes[kept], scores[b, keep][kept], points[kept])))
    return found


def load_retinaface(*, weights=None, device="cpu"):
    """``(net, source)``: the network with its pretrained weights, in eval mode on ``device``.

    ``weights`` is None (search ``$GEMO_HOME/weights`` then the torch hub
    checkpoints for ``mobilenet0.25_Final.pth``), a folder to search first, or a
    file. The file has no published checksum: its tensors must match the
    network's names and shapes exactly, or a :class:`GemoError` says what differs.
    """
    state, source = pretrained.resolve([WEIGHTS], weights=weights)
    net = RetinaFace()
    state = {key.removeprefix("module."): value for key, value in state.items()}
    own = net.state_dict()
    for key in own:  # BatchNorm counters are absent from files saved by old torch versions
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = own[key]
    pretrained.check_state_dict(state, net, source=source["file"])
    net.load_state_dict(state)
    if source.get("sha256") is None:  # record which file it was, since no hash is published
        source["sha256"] = sha256_file(source["file"])
    return net.eval().to(device), source
