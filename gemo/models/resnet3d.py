"""ResNet-50 in 3D: Pinto 2020's Moments in Time network, and ImageNet's ResNet-50 inflated to it.

The network is the ``ResNet3D`` of the Moments in Time models
(github.com/zhoubolei/moments_models, BSD-2-Clause), with torchvision's
parameter names: every convolution of ResNet-50 gets a temporal size (7 for
``conv1``, 3 for each bottleneck's middle convolution, 1 elsewhere); ``conv1``
keeps time (stride 1), the max pool and the first block of ``layer2`` to
``layer4`` halve it, so the last maps have ``ceil(T / 16)`` positions.

:func:`inflate` turns a torchvision ResNet-50 into it as I3D inflates a 2D
network: each 2D kernel is repeated over its temporal size and divided by it.
An inflated network pads time by repeating the clip's first and last frames
(``temporal_padding="replicate"``), so that a clip of one repeated frame gives
exactly the 2D network's features at every position; the Moments in Time
weights were trained with zero padding (``"zeros"``), which they keep.
"""

from torch import nn
from torch.nn import functional as F

LAYERS = (3, 4, 6, 3)  # bottlenecks per stage of ResNet-50
TRUNK = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")


class Conv3d(nn.Conv3d):
    """``nn.Conv3d`` that may pad time by repeating the edge frames (space is zero-padded)."""

    def __init__(self, channels, out, kernel, stride=1, padding=0, *, temporal_padding="zeros"):
        super().__init__(channels, out, kernel, stride, padding, bias=False)
        self.time_pad = self.padding[0] if temporal_padding == "replicate" else 0
        if self.time_pad:
            self.padding = (0, *self.padding[1:])

    def forward(self, x):
        if self.time_pad:
            x = F.pad(x, (0, 0, 0, 0, self.time_pad, self.time_pad), mode="replicate")
        return super().forward(x)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, channels, planes, stride=1, *, temporal_padding):
        super().__init__()
        out = planes * self.expansion
        self.conv1 = Conv3d(channels, planes, 1)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = Conv3d(planes, planes, 3, stride, 1, temporal_padding=temporal_padding)
        self.bn2 = nn.BatchNorm3d(planes)
        self.conv3 = Conv3d(planes, out, 1)
        self.bn3 = nn.BatchNorm3d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or channels != out:
            self.downsample = nn.Sequential(Conv3d(channels, out, 1, stride), nn.BatchNorm3d(out))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet3D50(nn.Module):
    """Clips ``[N, 3, T, H, W]`` (ImageNet-normalised RGB) -> ``num_classes`` logits."""

    def __init__(self, num_classes=1000, *, temporal_padding="zeros"):
        super().__init__()
        self.conv1 = Conv3d(3, 64, 7, (1, 2, 2), 3, temporal_padding=temporal_padding)
        self.bn1 = nn.BatchNorm3d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d(3, 2, 1)
        channels = 64
        for index, (blocks, planes) in enumerate(zip(LAYERS, (64, 128, 256, 512))):
            stride = 1 if index == 0 else 2
            stage = []
            for block in range(blocks):
                stage.append(Bottleneck(channels, planes, stride if block == 0 else 1,
                                        temporal_padding=temporal_padding))
                channels = planes * Bottleneck.expansion
            setattr(self, f"layer{index + 1}", nn.Sequential(*stage))
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x):
        for name in TRUNK:
            x = getattr(self, name)(x)
        return self.fc(x.mean(dim=(2, 3, 4)))


def inflate(resnet2d):
    """A :class:`ResNet3D50` (replicate temporal padding) from a torchvision ResNet-50."""
    network = ResNet3D50(resnet2d.fc.out_features, temporal_padding="replicate").to(
        resnet2d.conv1.weight.dtype)
    target = network.state_dict()
    state = {}
    for key, value in resnet2d.state_dict().items():
        if value.dim() == 4:  # [out, in, h, w] -> [out, in, t, h, w], summing to the 2D kernel
            frames = target[key].shape[2]
            value = value.unsqueeze(2).repeat(1, 1, frames, 1, 1) / frames
        state[key] = value
    network.load_state_dict(state)
    return network
