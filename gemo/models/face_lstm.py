"""``face-lstm``: Fusical's face model, Bi-LSTM(32) -> FC(8) -> FC(3) over per-frame face vectors.

The input is the ``fer`` set's 22 values per frame (min, max and mean of the 7
expression probabilities over the frame's faces, and the face count). The last
states of both directions summarise the clip; the FC(8) output is the embedding.
It is also the default for the ``pose`` set's 25 values per frame: Fusical's pose
model was the same shape, "a bi-directional LSTM followed by a fully-connected
layer and a softmax classifier" (``blstm-attention`` would average its 4-frame
``pool`` over the 5 frames of a clip).

>>> model = create("face-lstm", input_dim=22)            # doctest: +SKIP
>>> model(torch.zeros(2, 10, 22)).shape                  # doctest: +SKIP
torch.Size([2, 3])
"""

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from gemo import options
from gemo.models.base import Model, register


@register
class FaceLSTM(Model):
    name = "face-lstm"
    input_kind = "sequence"
    description = ("Bi-LSTM(32) over per-frame vectors (face expressions, pose), FC(8), FC -> 3 "
                   "(Fusical)")

    @dataclass(frozen=True)
    class Options(options.Options):
        hidden: int = 32
        fc: int = 8
        dropout: float = 0.3

    train_defaults = {"batch_size": 32}

    def __init__(self, **config):
        super().__init__(**config)
        o = self.options
        self.lstm = nn.LSTM(self.input_dim, o.hidden, batch_first=True, bidirectional=True)
        self.fc = nn.Sequential(nn.Dropout(o.dropout), nn.Linear(2 * o.hidden, o.fc), nn.ReLU())
        self.head = nn.Linear(o.fc, self.num_classes)

    @property
    def embedding_dim(self):
        return self.options.fc

    def embed(self, x, lengths=None):
        """``x``: ``[batch, frames, 22]``; ``lengths``: valid frames per clip (None = all)."""
        if lengths is not None:
            x = pack_padded_sequence(x, lengths.clamp(min=1).cpu(), batch_first=True,
                                     enforce_sorted=False)
        _, (state, _) = self.lstm(x)
        return self.fc(torch.cat([state[-2], state[-1]], dim=1))
