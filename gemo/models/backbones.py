"""Frame backbones of ``frame-cnn``, registered by name: frames ``[N, 3, H, W]`` -> ``[N, width]``.

``small`` is a compact conv net trained from scratch (the default: it trains in
seconds per epoch on a CPU); ``resnet18``, ``resnet50`` and ``vgg19`` are
torchvision networks built with ``weights=None``, whose ImageNet files are
registered here and come from :mod:`gemo.pretrained` when asked for.

Adding a backbone is one registered class::

    @register
    class MobileNetV3(Torchvision):
        name = "mobilenet_v3_large"
        width = 960
        weights = ("mobilenet_v3_large.imagenet1k_v1",)  # registered WeightFile names

        def strip(self, network):
            network.classifier = nn.Identity()
            return network
"""

from torch import nn

from gemo import pretrained
from gemo.errors import GemoError
from gemo.models.inputs import IMAGENET_MEAN, IMAGENET_STD
from gemo.registry import Registry

BACKBONES = Registry("backbone")
register, available, get = BACKBONES.register, BACKBONES.available, BACKBONES.get


class Backbone:
    """``name``, ``input_size`` (frames are resized to it unless the model says otherwise),
    ``weights`` (pretrained file names, preferred first) and :meth:`build`."""

    name = ""
    input_size = 224
    weights = ()

    def build(self, *, channels, width, spatial):
        """``(module, feature width)`` for frames of ``channels`` channels."""
        raise NotImplementedError


@register
class Small(Backbone):
    """Stride-2 stem then conv + max-pool stages: an input of 80 is 5x5 at the last stage.
    Kept small (~100k parameters) because the default must train in seconds on a CPU."""

    name = "small"
    input_size = 80

    def build(self, *, channels, width, spatial):
        widths = [width, 2 * width, 4 * width, 8 * width]
        layers, previous = [], channels
        for index, out in enumerate(widths):
            stride = 2 if index == 0 else 1
            layers += [nn.Conv2d(previous, out, 3, stride=stride, padding=1, bias=False),
                       nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            if index < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            previous = out
        if spatial == "avgmax":
            return nn.Sequential(*layers, _AvgMaxPool()), 2 * widths[-1]
        return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten()), widths[-1]


class Torchvision(Backbone):
    """A torchvision ImageNet classifier without its last layer (``width`` features)."""

    width = 0

    def classifier(self):
        """The whole network, as its weights file stores it."""
        from torchvision import models

        return getattr(models, self.name)(weights=None)

    def strip(self, network):
        """``network`` without its ImageNet classifier: it outputs the penultimate features."""
        network.fc = nn.Identity()
        return network

    def build(self, *, channels, width, spatial):
        if channels != 3:
            raise GemoError(f"{self.name} takes RGB frames (3 channels), not {channels}")
        return self.strip(self.classifier()), self.width


@register
class ResNet18(Torchvision):
    name, width, weights = "resnet18", 512, ("resnet18.imagenet1k_v1",)


@register
class ResNet50(Torchvision):
    name, width = "resnet50", 2048
    weights = ("resnet50.imagenet1k_v2", "resnet50.imagenet1k_v1")


@register
class VGG19(Torchvision):
    name, width, weights = "vgg19", 4096, ("vgg19.imagenet1k_v1",)

    def strip(self, network):
        network.classifier = network.classifier[:-1]  # keep fc6/fc7 (4096-d)
        return network


class _AvgMaxPool(nn.Module):
    """Global average and max pooling, concatenated: the max keeps small, strong evidence
    (a few people in a wide scene) that averaging over the frame would dilute."""

    def forward(self, x):
        import torch

        return torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)


def _imagenet(name, filename, sha256, size, weights):
    """Register torchvision's ImageNet classifier file ``filename`` (``weights``: its enum)."""
    pretrained.register(pretrained.WeightFile(
        name, filename, sha256, f"https://download.pytorch.org/models/{filename}", size,
        f"torchvision {weights}", input_size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD,
        licence="BSD-3-Clause (torchvision)"))


# The 8 hex chars in a file name are its SHA-256 prefix; the full hashes and sizes are those of
# the published files.
_imagenet("resnet18.imagenet1k_v1", "resnet18-f37072fd.pth",
          "f37072fd47e89c5e827621c5baffa7500819f7896bbacec160b1a16c560e07ec", 46_830_571,
          "ResNet18_Weights.IMAGENET1K_V1")
_imagenet("resnet50.imagenet1k_v2", "resnet50-11ad3fa6.pth",
          "11ad3fa62ca79e40addfd354a8ec4b7c75143b3038b8d2a807fbc68deab379ca", 102_540_417,
          "ResNet50_Weights.IMAGENET1K_V2")
_imagenet("resnet50.imagenet1k_v1", "resnet50-0676ba61.pth",
          "0676ba61b6795bbe1773cffd859882e5e297624d384b6993f7c9e683e722fb8a", None,
          "ResNet50_Weights.IMAGENET1K_V1")
_imagenet("vgg19.imagenet1k_v1", "vgg19-dcbb9e9d.pth",
          "dcbb9e9dad569fff7a846263a77324fc34978fea2bfb039c012d710e1776ae44", 574_673_361,
          "VGG19_Weights.IMAGENET1K_V1")
