"""``cnn-blstm``: Fusical's audio model, a CNN over the log-mel spectrogram, then a Bi-LSTM.

Fusical (section 5.3) ran three CNN layers (64, 512 and 512 feature maps) and two
bidirectional LSTM layers over mel-spectrograms. Here each of three blocks is a 3x3
convolution over (time, mel band) with stride 2 over the bands -> ReLU; the first two also
stride 2 over time (498 frames of 10 ms become 125 steps of 40 ms, as
``blstm-attention``'s ``pool`` 4). The channels and bands of each step are then one vector,
read by a ``layers``-deep Bi-LSTM; the mean of its outputs over the clip's steps is the
embedding, then dropout and a fully connected layer give the three class logits.

Chosen on tests/test_training.py's planted mel cache, 4 seeds, val accuracy 1.0 each.
Against: batch norm after each convolution, 0.67-1.0 (with a few batches per epoch its
running statistics lag the weights; it would also let padding into the batch statistics);
the last LSTM states instead of the mean over steps, 0.67-1.0. Strided convolutions
rather than convolutions at full resolution then 2x2 max pooling: a training step 3x
faster on a CPU (25 instead of 75 ms per 5 s clip), the same accuracy there.

The defaults are narrower than Fusical's (``channels`` 16, ``wide_channels`` 32 instead of
64 and 512: about 100x fewer multiply-adds, so that it trains on a CPU);
``channels=64 wide_channels=512`` has their widths. Padded steps are zeroed before every
convolution and the LSTM reads packed sequences, so a padded clip gives what it gives alone.

>>> model = create("cnn-blstm", input_dim=64)               # doctest: +SKIP
>>> model(torch.zeros(2, 498, 64)).shape                    # doctest: +SKIP
torch.Size([2, 3])
"""

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from gemo import options
from gemo.models.base import Model, register

TIME_STRIDES = (2, 2, 1)  # per block; every block halves the bands


@register
class CNNBLSTM(Model):
    name = "cnn-blstm"
    input_kind = "sequence"
    description = "CNN over time x mel patches (time kept), Bi-LSTM, FC -> 3 (Fusical audio)"

    @dataclass(frozen=True)
    class Options(options.Options):
        channels: int = 16  # feature maps of the first block
        wide_channels: int = 32  # of the second and third blocks
        hidden: int = 64  # LSTM units per direction
        layers: int = 2
        dropout: float = 0.3

        def check(self):
            if min(self.channels, self.wide_channels, self.hidden, self.layers) < 1:
                return "channels, wide_channels, hidden and layers must be positive"
            return None

    train_defaults = {"batch_size": 64}

    def __init__(self, **config):
        super().__init__(**config)
        o = self.options
        widths = (1, o.channels, o.wide_channels, o.wide_channels)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(widths[i], widths[i + 1], 3, stride=(stride, 2), padding=1),
                          nn.ReLU())
            for i, stride in enumerate(TIME_STRIDES))
        bands = self.input_dim
        for _ in TIME_STRIDES:
            bands = -(-bands // 2)  # a stride-2 convolution padded by 1 gives ceil(n / 2)
        self.lstm = nn.LSTM(o.wide_channels * bands, o.hidden, num_layers=o.layers,
                            batch_first=True, bidirectional=True,
                            dropout=o.dropout if o.layers > 1 else 0.0)
        self.head = nn.Sequential(nn.Dropout(o.dropout), nn.Linear(2 * o.hidden, self.num_classes))

    @property
    def embedding_dim(self):
        return 2 * self.options.hidden

    def embed(self, x, lengths=None):
        """``x``: ``[batch, time, bands]``; ``lengths``: valid steps per clip (None = all)."""
        # Padding is zeroed before every convolution, so that the last valid steps see the
        # zeros they see at the end of the clip alone (a convolution turns zeros into its bias).
        x = x.unsqueeze(1)  # [batch, 1 channel, time, bands]
        for block, stride in zip(self.blocks, TIME_STRIDES, strict=True):
            x = block(_zero_padding(x, lengths))
            if lengths is not None:
                lengths = torch.div(lengths + stride - 1, stride, rounding_mode="floor")
        batch, channels, steps, bands = x.shape
        x = x.permute(0, 2, 1, 3).reshape(batch, steps, channels * bands)
        if lengths is None or bool((lengths == steps).all()):
            out, _ = self.lstm(x)
            return out.mean(dim=1)
        lengths = lengths.clamp(1, steps)
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = pad_packed_sequence(self.lstm(packed)[0], batch_first=True, total_length=steps)
        return out.sum(dim=1) / lengths.to(out.device, out.dtype)[:, None]  # padding is 0


def _zero_padding(x, lengths):
    """``x`` ``[batch, channels, time, bands]`` with the steps past each clip's length zeroed."""
    if lengths is None:
        return x
    valid = torch.arange(x.shape[2], device=x.device)[None, :] < lengths.to(x.device)[:, None]
    return x * valid[:, None, :, None]
