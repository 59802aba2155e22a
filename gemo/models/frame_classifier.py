"""``frame-classifier``: a classifier of single frames; a clip's score is its frames' scores
averaged (Petrova 2020's scene model).

Petrova et al. fine-tuned an ImageNet VGG-19 on individual frames, with fully connected,
dropout and ReLU layers added at its end, rotation (+-10 degrees), flip, scaling and
224 x 224 crops, and SGD with momentum 0.9 at a learning rate of 0.001; a clip's label came
from the softmax scores of all its frames, averaged (better, in their hands, than
accumulating them). Here:

* ``backbone`` and its options are ``frame-cnn``'s (frame backbones only: the classifier
  reads one frame at a time); ``--backbone vgg19 --pretrained`` is Petrova's network,
  ``small`` (the default) trains from scratch on a CPU;
* the extended head: ``layers`` times Linear(``hidden``) -> ReLU -> Dropout(``dropout``)
  on the backbone's features, then Linear -> 3 logits per frame;
* training draws ``train_frames`` frames per clip and epoch (1 by default: each step sees
  single frames, each frame of a clip equally likely, as Petrova sampled them), augmented
  as ``frame-cnn``'s frames with ``rotate`` = 10 degrees;
* a clip's score, ``clip_score``: ``mean`` is the softmax of every frame averaged;
  ``vote`` accumulates the frames' labels (the share of frames whose top class each
  class is), ties broken by the averaged softmax. While training, the frames' scores are
  always averaged (with one frame per clip, the loss is each frame's own cross-entropy).

The model returns the logarithm of the clip's score, so the softmax the scores table holds is
the score itself, and the clip's embedding is that log-score (3 values): a classifier of
frames has no clip-level penultimate layer.
"""

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from gemo import options
from gemo.models import backbones
from gemo.models.base import Model, register
from gemo.models.frame_cnn import FrameCNN, _check_frame_options


@register
class FrameClassifier(FrameCNN):
    name = "frame-classifier"
    input_kind = "frames"
    description = ("a classifier of single frames (backbone + FC layers); the clip's score "
                   "averages its frames' softmax (Petrova 2020)")

    @dataclass(frozen=True)
    class Options(options.Options):
        backbone: str = "small"  # a frame backbone of gemo.models.backbones
        width: int = 16  # channels of the small backbone's first stage
        spatial: Literal["avg", "avgmax"] = "avgmax"
        input_size: int = 0  # 0: the backbone's own (80 small, 224 ImageNet)
        hidden: int = 512
        layers: int = 2  # hidden FC layers added after the backbone
        dropout: float = 0.5
        clip_score: Literal["mean", "vote"] = "mean"
        freeze: bool = False
        crop_scale: float = 0.6
        flip: bool = True
        rotate: float = 10.0  # degrees
        train_frames: int = 1  # frames drawn per clip and epoch while training (0: all)

        def check(self):
            problem = _check_frame_options(self)
            if problem:
                return problem
            if backbones.get(self.backbone).video:
                return (f"backbone {self.backbone} reads whole clips; a frame classifier needs "
                        "a frame backbone (use frame-cnn for video networks)")
            if self.hidden < 1 or self.layers < 0:
                return "hidden must be positive and layers >= 0"
            return None if 0.0 <= self.dropout < 1.0 else "dropout must be within [0, 1)"

    train_defaults = {"batch_size": 16}

    def __init__(self, **config):
        Model.__init__(self, **config)  # frame-cnn's temporal layers are not built
        o, width = self._build_backbone()
        layers = []
        for _ in range(o.layers):
            layers += [nn.Linear(width, o.hidden), nn.ReLU(), nn.Dropout(o.dropout)]
            width = o.hidden
        self.classifier = nn.Sequential(*layers, nn.Linear(width, self.num_classes))
        self.head = nn.Identity()  # embed() gives the clip's log-scores already
        self._embedding_dim = self.num_classes

    def frame_logits(self, x):
        """``x``: ``[batch, frames, 3, size, size]`` -> logits ``[batch, frames, classes]``."""
        batch, frames = x.shape[:2]
        return self.classifier(self.backbone(x.flatten(0, 1))).view(batch, frames, -1)

    def embed(self, x):
        """The logarithm of the clip's score ``[batch, classes]`` (see ``clip_score``)."""
        logits = self.frame_logits(x)
        frames = logits.shape[1]
        # log of the frames' softmax averaged, without leaving log space (no underflow to 0)
        mean = torch.logsumexp(torch.log_softmax(logits, dim=-1), dim=1) - math.log(frames)
        if self.training or self.options.clip_score == "mean":
            return mean
        votes = F.one_hot(logits.argmax(-1), self.num_classes).sum(dim=1).float()
        # (votes + mean softmax) / (frames + 1): a whole vote outweighs any softmax difference
        return torch.logaddexp(votes.log(), mean) - math.log(frames + 1)
