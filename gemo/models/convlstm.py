"""``convlstm``: ConvLSTM heads over per-frame feature maps, FC -> 3 (Fusical's scene model).

Fusical (EmotiW 2020) ran an ImageNet ResNet-50 on each of 12 frames and fed its feature
maps to three 2D convolutional LSTM layers, 10 filters and a 3 x 3 kernel each; their
outputs were concatenated and went through a fully connected layer (L2 0.001) and a
softmax; Adam, learning rate 0.01. Here the maps come cached from a ``maps-<backbone>`` set
(``[K, grid, grid, C]``, ``maps-resnet50`` for Fusical's backbone), and:

* ``heads`` independent ConvLSTMs of ``filters`` filters and a ``kernel`` x ``kernel``
  kernel ("same" padding, so the maps keep their size) read the K maps in order; each gives
  its last state (a clip of fewer frames than its batch's longest stops at its own last);
* the states are averaged over the map's positions, concatenated (``heads * filters``
  values) and go through dropout and a linear layer. Fusical's layer read the whole state
  (a flattened map); averaging makes one model fit any map size, which the cache's ``grid``
  and the frames' size decide.

The gates are those of Keras' ConvLSTM2D (input, forget, cell, output; the forget gate's
bias starts at 1), with the logistic sigmoid. Every head's input convolutions run as one
convolution over all frames at once; the recurrent ones as one grouped convolution.
"""

from dataclasses import dataclass

import torch
from torch import nn

from gemo import options
from gemo.models.base import Model, register


@register
class ConvLSTM(Model):
    name = "convlstm"
    input_kind = "maps"
    description = "ConvLSTM heads over cached per-frame feature maps, FC -> 3 (Fusical)"

    @dataclass(frozen=True)
    class Options(options.Options):
        heads: int = 3
        filters: int = 10
        kernel: int = 3
        dropout: float = 0.0  # Fusical states none

        def check(self):
            if min(self.heads, self.filters) < 1:
                return "heads and filters must be positive"
            if self.kernel < 1 or self.kernel % 2 == 0:
                return f"kernel {self.kernel} must be odd (same padding keeps the map size)"
            return None if 0.0 <= self.dropout < 1.0 else "dropout must be within [0, 1)"

    train_defaults = {"batch_size": 32}  # Keras' default; Fusical does not state theirs

    def __init__(self, **config):
        super().__init__(**config)
        o = self.options
        gates, pad = 4 * o.heads * o.filters, o.kernel // 2
        # Output channels are laid out [head, gate, filter] in both convolutions.
        self.input_conv = nn.Conv2d(self.input_dim, gates, o.kernel, padding=pad)
        self.state_conv = nn.Conv2d(o.heads * o.filters, gates, o.kernel, padding=pad,
                                    groups=o.heads, bias=False)
        with torch.no_grad():
            self.input_conv.bias.view(o.heads, 4, o.filters)[:, 1] = 1.0  # forget gate
        self.head = nn.Sequential(nn.Dropout(o.dropout),
                                  nn.Linear(o.heads * o.filters, self.num_classes))

    @property
    def embedding_dim(self):
        return self.options.heads * self.options.filters

    def states(self, x, lengths=None):
        """Each head's last hidden state ``[batch, heads, filters, h, w]``.

        ``x``: ``[batch, frames, h, w, channels]``; ``lengths``: valid frames per clip."""
        batch, steps, height, width, _ = x.shape
        o = self.options
        if lengths is None:
            lengths = torch.full((batch,), steps, dtype=torch.long)
        lengths = lengths.to(x.device).clamp(1, steps)
        shape = (batch, o.heads, 4, o.filters, height, width)
        inputs = self.input_conv(x.flatten(0, 1).permute(0, 3, 1, 2))
        inputs = inputs.view(batch, steps, *shape[1:])
        h = x.new_zeros(batch, o.heads, o.filters, height, width)
        c = torch.zeros_like(h)
        for step in range(steps):
            gates = inputs[:, step] + self.state_conv(h.flatten(1, 2)).view(shape)
            i, f, g, out = gates.unbind(dim=2)
            c_next = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h_next = torch.sigmoid(out) * torch.tanh(c_next)
            live = (step < lengths).view(batch, 1, 1, 1, 1)  # padded steps keep the state
            c, h = torch.where(live, c_next, c), torch.where(live, h_next, h)
        return h

    def embed(self, x, lengths=None):
        """``[batch, heads * filters]``: the heads' last states averaged over positions."""
        return self.states(x, lengths).mean(dim=(3, 4)).flatten(1)
