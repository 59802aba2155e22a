"""``frame-cnn``: a CNN over a clip's K frames, pooled over time, FC -> 3.

The scene model of FusiCal (ResNet-50 per frame, then temporal layers), the
frame stream of the EmotiW baseline and Pinto's 3D video network, in one family:

* ``backbone``: a name registered in :mod:`gemo.models.backbones`: ``small`` (a
  compact conv net trained from scratch; the default, trains in seconds per
  epoch on a CPU), ``resnet18`` / ``resnet50`` / ``vgg19`` / ``mobilenet_v2``
  (torchvision) and ``resnet50d`` / ``resnet101d`` / ``rexnet_100`` (timm, optional)
  networks, one frame at a time, or a video backbone (``i3d``,
  ``resnet50-inflated``, ``resnet3d50-mmit``, ``r2plus1d_18``) that reads the K
  frames as one clip and gives T' positions (K / 8 or K / 16, rounded up).
  Pretrained weights come from :meth:`backbones.Backbone.pretrained` when training
  with ``pretrained=True`` (docs/scene.md).
* ``temporal``: ``mean`` over frames or positions (default), ``attention``
  (learned weights per step) or ``lstm`` (last state of an LSTM over the steps).
* ``input_size``: frames are resized from the cache on the fly; 0 picks the
  backbone's size (80 for ``small``, which keeps the default inside the demo's
  CPU budget; 224 for the ImageNet networks).
* ``spatial`` (``small`` only): ``avgmax`` concatenates global average and max
  pooling of the last feature map (default; small people in a wide frame are
  strong but local evidence), ``avg`` is plain global average pooling.
* ``freeze``: keep the backbone's weights fixed and train only the temporal and
  output layers (Pinto 2020 fine-tuned only the last layer of its video network).
* augmentation while training (see :mod:`gemo.models.inputs`): a random rotation
  within +-``rotate`` degrees (0, the default: none), a random resized crop with
  scale in [``crop_scale``, 1] and a horizontal flip, the same for all
  frames of a clip, and ``train_frames`` frames drawn at random per clip
  (0 = all K; fewer is faster and acts as temporal jitter; inference always
  uses all K, which mean pooling allows; -1, the default, is the backbone's
  choice: 5 for a frame backbone, all K for a video one).
"""

from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import nn

from gemo import options
from gemo.models import backbones
from gemo.models.base import Model, register


@register
class FrameCNN(Model):
    name = "frame-cnn"
    input_kind = "frames"
    description = ("CNN per frame or video network per clip (a registered backbone), pooled over "
                   "time, FC -> 3")

    @dataclass(frozen=True)
    class Options(options.Options):
        backbone: str = "small"  # a name in gemo.models.backbones
        width: int = 16  # channels of the small backbone's first stage
        spatial: Literal["avg", "avgmax"] = "avgmax"
        input_size: int = 0  # 0: the backbone's own (80 small, 224 ImageNet)
        temporal: Literal["mean", "attention", "lstm"] = "mean"
        hidden: int = 64
        dropout: float = 0.5
        freeze: bool = False
        crop_scale: float = 0.6
        flip: bool = True
        rotate: float = 0.0  # degrees
        train_frames: int = -1  # -1: the backbone's own (5 per frame, 0 = all K for video)

        def check(self):
            return _check_frame_options(self)

    train_defaults = {"batch_size": 16}

    def __init__(self, **config):
        super().__init__(**config)
        o, width = self._build_backbone()
        if o.temporal == "attention":
            self.score = nn.Sequential(nn.Linear(width, o.hidden), nn.Tanh(),
                                       nn.Linear(o.hidden, 1, bias=False))
        elif o.temporal == "lstm":
            self.lstm = nn.LSTM(width, o.hidden, batch_first=True)
            width = o.hidden
        self._embedding_dim = width
        self.head = nn.Sequential(nn.Dropout(o.dropout), nn.Linear(width, self.num_classes))

    def _build_backbone(self):
        """Resolve the options the backbone decides (input size, frames drawn), build
        ``self.backbone`` (frozen with ``freeze``); ``(options, feature width)``."""
        backbone = backbones.get(self.options.backbone)
        if not self.options.input_size:  # resolved, so the checkpoint states the size used
            self.options = replace(self.options, input_size=backbone.input_size)
        if self.options.train_frames == -1:
            self.options = replace(self.options, train_frames=backbone.train_frames)
        o = self.options
        self.video = backbone.video
        self.backbone, width = backbone().build(channels=self.input_dim, width=o.width,
                                                spatial=o.spatial)
        if o.freeze:
            self.backbone.requires_grad_(False)
        return o, width

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
        if self.video:  # the clip at once: [batch, 3, frames, size, size] -> [batch, T', width]
            steps = self.backbone(x.transpose(1, 2))
        else:
            steps = self.backbone(x.flatten(0, 1)).view(batch, frames, -1)
        temporal = self.options.temporal
        if temporal == "mean":
            return steps.mean(dim=1)
        if temporal == "attention":
            weights = torch.softmax(self.score(steps).squeeze(-1), dim=1)
            return torch.bmm(weights.unsqueeze(1), steps).squeeze(1)
        _, (state, _) = self.lstm(steps)
        return state[-1]

    def pretrained_state(self, *, weights=None):
        """``(backbone state dict, source)`` from the backbone's weights file, checked to fit.

        ``weights``: None (search the known files), a known name, a folder or a file
        (see :func:`gemo.pretrained.resolve`). The ``small`` backbone has none.
        """
        module, source = backbones.get(self.options.backbone)().pretrained(weights=weights)
        return module.state_dict(), source

    def use_pretrained(self, state):
        """Load a state from :meth:`pretrained_state` into the backbone."""
        self.backbone.load_state_dict(state)

    def load_pretrained(self, *, weights=None):
        """Load pretrained weights into the backbone; returns where they came from."""
        state, source = self.pretrained_state(weights=weights)
        self.use_pretrained(state)
        return source


def _check_frame_options(o):
    """The checks the frame families share (backbone, input size, frames drawn, rotation)."""
    if o.backbone not in backbones.available():
        return f"backbone: {o.backbone!r} is not one of {', '.join(backbones.available())}"
    if o.input_size and o.input_size < 32:
        return f"input_size {o.input_size} is too small (>= 32)"
    if o.train_frames < -1:
        return f"train_frames {o.train_frames} must be >= 0 (or -1: the backbone's)"
    if not 0.0 <= o.rotate <= 180.0:
        return f"rotate {o.rotate} must be within [0, 180] degrees"
    return None
