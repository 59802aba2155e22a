"""``temporal-head``: a small head over cached per-frame embeddings ``[K, width]``.

Made for the ``embed-*`` sets (a frozen ImageNet backbone's features of K frames,
:mod:`gemo.extractors.embeddings`): the backbone ran once at extraction, so only
this head trains, in seconds on a CPU. Each frame's (standardised) embedding is
projected to ``hidden`` units (Linear -> ReLU -> dropout), then pooled over time:

* ``mean``: the average over the clip's frames;
* ``attention``: a learned score per frame, softmax over the clip, weighted sum;
* ``lstm``: the last state of a one-layer LSTM over the frames (their order counts).

then dropout and a linear layer give the three class logits. Padded steps (clips
of fewer frames in one batch) are left out of every pooling.

>>> model = create("temporal-head", input_dim=1280, pooling="mean")   # doctest: +SKIP
>>> model(torch.zeros(2, 10, 1280)).shape                             # doctest: +SKIP
torch.Size([2, 3])
"""

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from gemo import options
from gemo.models.base import Model, register


@register
class TemporalHead(Model):
    name = "temporal-head"
    input_kind = "sequence"
    description = "per-frame projection of cached embeddings, mean/attention/LSTM over frames, FC -> 3"

    @dataclass(frozen=True)
    class Options(options.Options):
        pooling: Literal["mean", "attention", "lstm"] = "mean"
        hidden: int = 128
        dropout: float = 0.5

        def check(self):
            if self.hidden < 1:
                return "hidden must be positive"
            return None if 0.0 <= self.dropout < 1.0 else "dropout must be within [0, 1)"

    train_defaults = {"batch_size": 64}  # one step per epoch on the demo; 42 on VGAF

    def __init__(self, **config):
        super().__init__(**config)
        o = self.options
        self.project = nn.Sequential(nn.Dropout(o.dropout), nn.Linear(self.input_dim, o.hidden),
                                     nn.ReLU())
        if o.pooling == "attention":
            self.score = nn.Sequential(nn.Linear(o.hidden, o.hidden), nn.Tanh(),
                                       nn.Linear(o.hidden, 1, bias=False))
        elif o.pooling == "lstm":
            self.lstm = nn.LSTM(o.hidden, o.hidden, batch_first=True)
        self.head = nn.Sequential(nn.Dropout(o.dropout), nn.Linear(o.hidden, self.num_classes))

    @property
    def embedding_dim(self):
        return self.options.hidden

    def embed(self, x, lengths=None):
        """``x``: ``[batch, frames, width]``; ``lengths``: valid frames per clip (None = all)."""
        steps = x.shape[1]
        h = self.project(x)
        if lengths is None:
            lengths = torch.full((x.shape[0],), steps, dtype=torch.long)
        lengths = lengths.clamp(1, steps)
        pooling = self.options.pooling
        if pooling == "lstm":
            packed = pack_padded_sequence(h, lengths.cpu(), batch_first=True, enforce_sorted=False)
            _, (state, _) = self.lstm(packed)
            return state[-1]
        mask = torch.arange(steps, device=x.device)[None, :] < lengths.to(x.device)[:, None]
        if pooling == "mean":
            weights = mask.float() / lengths.to(x.device)[:, None].float()
        else:
            weights = torch.softmax(self.score(h).squeeze(-1).masked_fill(~mask, float("-inf")), 1)
        return torch.bmm(weights.unsqueeze(1), h).squeeze(1)
