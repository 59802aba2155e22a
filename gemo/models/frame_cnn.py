"""``frame-cnn``: a CNN applied to each of a clip's K frames, pooled over time, FC -> 3.

The scene model of FusiCal (ResNet-50 per frame, then temporal layers) and the
frame stream of the EmotiW baseline, in one family:

* ``backbone``: ``small`` (a compact conv net trained from scratch; the default,
  trains in seconds per epoch on a CPU), or ``resnet18`` / ``resnet50`` /
  ``vgg19`` (torchvision networks built with ``weights=None``; ImageNet weights
  come from :mod:`gemo.pretrained` when training with ``pretrained=True``; their
  entries are registered below).
* ``temporal``: ``mean`` over frames (default), ``attention`` (learned weights
  per frame) or ``lstm`` (last state of an LSTM over the frames).
* ``input_size``: frames are resized from the cache on the fly; 0 picks the
  backbone's size (80 for ``small``, which keeps the default inside the demo's
  CPU budget; 224 for the ImageNet networks).
* ``spatial`` (``small`` only): ``avgmax`` concatenates global average and max
  pooling of the last feature map (default; small people in a wide frame are
  strong but local evidence), ``avg`` is plain global average pooling.
* ``freeze``: keep the backbone's weights fixed and train only the temporal and
  output layers (Pinto 2020 fine-tuned only the last layer of its video network).
* augmentation while training (see :mod:`gemo.models.inputs`): random resized
  crop with scale in [``crop_scale``, 1] and a horizontal flip, the same for all
  frames of a clip, and ``train_frames`` frames drawn at random per clip
  (0 = all K; fewer is faster and acts as temporal jitter; inference always
  uses all K, which mean pooling allows).
"""

from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import nn

from gemo import options, pretrained
from gemo.errors import GemoError
from gemo.models.base import Model, register
from gemo.models.inputs import IMAGENET_MEAN, IMAGENET_STD

# Known ImageNet files per backbone, preferred first.
BACKBONE_WEIGHTS = {
    "resnet18": ("resnet18.imagenet1k_v1",),
    "resnet50": ("resnet50.imagenet1k_v2", "resnet50.imagenet1k_v1"),
    "vgg19": ("vgg19.imagenet1k_v1",),
}
_INPUT_SIZE = {"small": 80, "resnet18": 224, "resnet50": 224, "vgg19": 224}


def _imagenet(name, filename, sha256, size, weights):
    """Register torchvision's ImageNet classifier file ``filename`` (``weights``: its enum)."""
    pretrained.register(pretrained.WeightFile(
        name, filename, sha256, f"https://download.pytorch.org/models/{filename}", size,
        f"torchvision {weights}", input_size=_INPUT_SIZE[name.split(".")[0]],
        mean=IMAGENET_MEAN, std=IMAGENET_STD, licence="BSD-3-Clause (torchvision)"))


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


@register
class FrameCNN(Model):
    name = "frame-cnn"
    input_kind = "frames"
    description = "per-frame CNN (small | resnet18 | resnet50 | vgg19), pooled over frames, FC -> 3"

    @dataclass(frozen=True)
    class Options(options.Options):
        backbone: Literal["small", "resnet18", "resnet50", "vgg19"] = "small"
        width: int = 16  # channels of the small backbone's first stage
        spatial: Literal["avg", "avgmax"] = "avgmax"
        input_size: int = 0  # 0: the backbone's own (80 small, 224 ImageNet)
        temporal: Literal["mean", "attention", "lstm"] = "mean"
        hidden: int = 64
        dropout: float = 0.5
        freeze: bool = False
        crop_scale: float = 0.6
        flip: bool = True
        train_frames: int = 5

        def check(self):
            if self.input_size and self.input_size < 32:
                return f"input_size {self.input_size} is too small (>= 32)"
            return None

    train_defaults = {"batch_size": 16}

    def __init__(self, **config):
        super().__init__(**config)
        if not self.options.input_size:  # resolved, so the checkpoint states the size used
            self.options = replace(self.options, input_size=_INPUT_SIZE[self.options.backbone])
        o = self.options
        self.backbone, width = _backbone(o.backbone, self.input_dim, o.width, o.spatial)
        if o.temporal == "attention":
            self.score = nn.Sequential(nn.Linear(width, o.hidden), nn.Tanh(),
                                       nn.Linear(o.hidden, 1, bias=False))
        elif o.temporal == "lstm":
            self.lstm = nn.LSTM(width, o.hidden, batch_first=True)
            width = o.hidden
        self._embedding_dim = width
        self.head = nn.Sequential(nn.Dropout(o.dropout), nn.Linear(width, self.num_classes))
        if o.freeze:
            self.backbone.requires_grad_(False)

    @property
    def embedding_dim(self):
        return self._embedding_dim

    def train(self, mode=True):
        super().train(mode)
        if self.options.freeze:
            self.backbone.eval()  # frozen batch-norm statistics stay the pretrained ones
        return self

    def embed(self, x):
        """``x``: ``[batch, frames, 3, size, size]`` float, normalised."""
        batch, frames = x.shape[:2]
        per_frame = self.backbone(x.flatten(0, 1)).view(batch, frames, -1)
        temporal = self.options.temporal
        if temporal == "mean":
            return per_frame.mean(dim=1)
        if temporal == "attention":
            weights = torch.softmax(self.score(per_frame).squeeze(-1), dim=1)
            return torch.bmm(weights.unsqueeze(1), per_frame).squeeze(1)
        _, (state, _) = self.lstm(per_frame)
        return state[-1]

    def pretrained_state(self, *, weights=None):
        """``(backbone state dict, source)`` from the ImageNet weights file, checked to fit.

        ``weights``: None (search the known files), a known name, a folder or a file
        (see :func:`gemo.pretrained.resolve`). The ``small`` backbone has none.
        """
        name = self.options.backbone
        if name not in BACKBONE_WEIGHTS:
            raise GemoError(f"backbone {name!r} has no pretrained weights; "
                            f"use one of {', '.join(BACKBONE_WEIGHTS)}")
        state, source = pretrained.resolve(BACKBONE_WEIGHTS[name], weights=weights)
        full = _torchvision(name)  # the whole classifier, as the file stores it
        pretrained.check_state_dict(state, full, source=source["file"])
        full.load_state_dict(state)
        return _strip_head(name, full).state_dict(), source

    def use_pretrained(self, state):
        """Load a state from :meth:`pretrained_state` into the backbone."""
        self.backbone.load_state_dict(state)

    def load_pretrained(self, *, weights=None):
        """Load ImageNet weights into the backbone; returns where they came from."""
        state, source = self.pretrained_state(weights=weights)
        self.use_pretrained(state)
        return source


def _torchvision(name):
    from torchvision import models

    return {"resnet18": models.resnet18, "resnet50": models.resnet50,
            "vgg19": models.vgg19}[name](weights=None)


def _strip_head(name, network):
    """The network without its ImageNet classifier: outputs the penultimate features."""
    if name.startswith("resnet"):
        network.fc = nn.Identity()
    else:  # vgg19: keep fc6/fc7 (4096-d), drop the 1000-way layer
        network.classifier = network.classifier[:-1]
    return network


def _feature_width(name):
    return {"resnet18": 512, "resnet50": 2048, "vgg19": 4096}[name]


class _AvgMaxPool(nn.Module):
    """Global average and max pooling, concatenated: the max keeps small, strong evidence
    (a few people in a wide scene) that averaging over the frame would dilute."""

    def forward(self, x):
        return torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)


def _backbone(name, channels, width, spatial="avg"):
    """``(module, feature_width)``: frames ``[N, 3, H, W]`` -> features ``[N, width]``."""
    if name != "small":
        if channels != 3:
            raise GemoError(f"{name} takes RGB frames (3 channels), not {channels}")
        return _strip_head(name, _torchvision(name)), _feature_width(name)
    # Stride-2 stem then conv + max-pool stages: an input of 80 is 5x5 at the last stage.
    # Kept small (~100k parameters) because the default must train in seconds on a CPU.
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
