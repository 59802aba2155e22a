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
* training draws ``train_frames`` frames per clip and epoch (1 by default: each frame of a
  clip equally likely, as Petrova sampled them), augmented as ``frame-cnn``'s frames with
  ``rotate`` = 10 degrees; the loss is the cross-entropy of every frame drawn against its
  clip's label (:meth:`FrameClassifier.loss`), as Petrova trained on single frames;
* a clip's score, ``clip_score``: ``mean`` is the softmax of every frame averaged;
  ``vote`` accumulates the frames' labels (the share of frames whose top class each
  class is), ties broken by the averaged softmax.

The embedding is the frames' last hidden vector averaged, then the clip's score (as ``fea``'s,
:class:`gemo.models.face_fusion.AveragedScores` reads the score back as logits), so the scores
table holds the score itself.
"""

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from gemo import options
from gemo.models import backbones
from gemo.models.base import Model, register
from gemo.models.face_fusion import AveragedScores
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
        self.hidden = nn.Sequential(*layers)
        self.classify = nn.Linear(width, self.num_classes)
        self.head = AveragedScores(self.num_classes)
        self._embedding_dim = width + self.num_classes

    def embed(self, x):
        """``x``: ``[batch, frames, 3, size, size]`` -> the frames' mean hidden vector, then the
        clip's score (``clip_score``)."""
        batch, frames = x.shape[:2]
        hidden = self.hidden(self.backbone(x.flatten(0, 1))).view(batch, frames, -1)
        logits = self.classify(hidden)
        self._frames = logits  # for loss(): each frame is a training example
        score = torch.softmax(logits, dim=-1).mean(dim=1)
        if self.options.clip_score == "vote":
            votes = F.one_hot(logits.argmax(-1), self.num_classes).sum(dim=1)
            score = (votes + score) / (frames + 1)  # a whole vote outweighs any softmax gap
        return torch.cat([hidden.mean(dim=1), score], dim=1)

    def loss(self, logits, labels, *, weight=None, label_smoothing=0.0):
        """Cross-entropy of every frame of the batch against its clip's label."""
        frames = self._frames
        per_frame = labels.view(-1, 1).expand(frames.shape[:2])
        return F.cross_entropy(frames.flatten(0, 1).float(), per_frame.flatten(), weight=weight,
                               label_smoothing=label_smoothing)
