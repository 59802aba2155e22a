"""``cross-attention``: self- and cross-modal attention over the sequences of several feature sets.

Evtodienko's multimodal model (section 4), on cached embedding sequences instead of
encoders trained end to end: each set's ``[T_i, F_i]`` sequence (e.g. ``embed-mobilenet_v2``
frames and ``pyaudio`` windows, joined by clip id; ``gemo train multimodal --features A,B``)
is projected by its own linear layer to a common ``width`` (the paper's PL), then each of
``layers`` blocks applies

* **self-attention** over all sets' tokens together (the paper's ``Q = K = V = a ⊕ v``),
* **cross-attention both ways**: each set's tokens query the other sets' tokens
  (``Q = v, K = V = a`` and ``Q = a, K = V = v`` for two sets),

each with a skip connection and LayerNorm (Vaswani et al.). Each set's tokens are then
averaged over its valid steps, the means concatenated, layer-normalised ("before the
penultimate projection layers") and projected to ``width`` (ReLU): the embedding; dropout and
a linear layer give the three logits. Padded steps are masked out of every attention and mean.

The paper's recipe is the command line's: ``--optimizer adam --lr 1e-4 --weight-decay 1e-3
--label-smoothing 0.2``. The defaults here are scaled down for a CPU (docs/training.md).

>>> model = create("cross-attention", input_dim=[1280, 34])           # doctest: +SKIP
>>> model(torch.zeros(2, 10, 1280), torch.tensor([10, 7]),
...       torch.zeros(2, 32, 34), torch.tensor([32, 32])).shape      # doctest: +SKIP
torch.Size([2, 3])
"""

from dataclasses import dataclass

import torch
from torch import nn

from gemo import options
from gemo.errors import GemoError
from gemo.models.base import Model, register


@register
class CrossAttention(Model):
    name = "cross-attention"
    input_kind = "sequences"
    description = ("per-set projection, joint self-attention and cross-attention both ways "
                   "(skip + LayerNorm), mean per set, LayerNorm, FC -> 3 (Evtodienko)")

    @dataclass(frozen=True)
    class Options(options.Options):
        width: int = 64  # the common width of every set's tokens (embedding size)
        heads: int = 4
        layers: int = 1  # blocks of self- then cross-attention
        dropout: float = 0.1
        max_steps: int = 32  # longer sequences are averaged in chunks to this many steps (0: all)

        def check(self):
            if min(self.width, self.heads, self.layers) < 1:
                return "width, heads and layers must be positive"
            if self.width % self.heads:
                return f"width {self.width} must be a multiple of heads {self.heads}"
            if self.max_steps < 0:
                return "max_steps must be 0 (all steps) or positive"
            return None if 0.0 <= self.dropout < 1.0 else "dropout must be within [0, 1)"

    train_defaults = {"batch_size": 32}

    def __init__(self, *, input_dim, **config):
        dims = [int(width) for width in input_dim]  # one width per feature set
        if len(dims) < 2:
            raise GemoError(f"model {self.name} needs two or more feature sets, got {len(dims)}")
        super().__init__(input_dim=sum(dims), **config)
        self.input_dims = dims
        o = self.options
        self.project = nn.ModuleList(nn.Linear(width, o.width) for width in dims)
        self.blocks = nn.ModuleList(_Block(o.width, o.heads, o.dropout, len(dims))
                                    for _ in range(o.layers))
        self.out = nn.Sequential(nn.LayerNorm(len(dims) * o.width),
                                 nn.Linear(len(dims) * o.width, o.width), nn.ReLU())
        self.head = nn.Sequential(nn.Dropout(o.dropout), nn.Linear(o.width, self.num_classes))

    @property
    def config(self):
        return {**super().config, "input_dim": list(self.input_dims)}

    @property
    def embedding_dim(self):
        return self.options.width

    def embed(self, *inputs):
        """``inputs``: ``x_1 [batch, T_1, F_1], lengths_1 [batch], x_2, lengths_2, ...``."""
        xs, lengths = inputs[0::2], inputs[1::2]
        tokens = [project(x) for project, x in zip(self.project, xs, strict=True)]
        pads = [torch.arange(x.shape[1], device=x.device)[None, :]
                >= n.to(x.device).clamp(1, x.shape[1])[:, None] for x, n in zip(xs, lengths)]
        for block in self.blocks:
            tokens = block(tokens, pads)
        means = [(t * ~pad[..., None]).sum(1) / (~pad).sum(1, keepdim=True)
                 for t, pad in zip(tokens, pads)]
        return self.out(torch.cat(means, dim=1))


class _Block(nn.Module):
    """Self-attention over every set's tokens together, then each set's tokens attending to the
    others'; a skip connection and LayerNorm around each attention."""

    def __init__(self, width, heads, dropout, sets):
        super().__init__()
        self.joint = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.joint_norm = nn.LayerNorm(width)
        self.cross = nn.ModuleList(
            nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
            for _ in range(sets))
        self.cross_norms = nn.ModuleList(nn.LayerNorm(width) for _ in range(sets))
        self.drop = nn.Dropout(dropout)

    def forward(self, tokens, pads):
        joint, pad = torch.cat(tokens, dim=1), torch.cat(pads, dim=1)
        attended, _ = self.joint(joint, joint, joint, key_padding_mask=pad, need_weights=False)
        joint = self.joint_norm(joint + self.drop(attended))
        tokens = list(joint.split([t.shape[1] for t in tokens], dim=1))
        out = []
        for i, (query, attend, norm) in enumerate(zip(tokens, self.cross, self.cross_norms)):
            others = torch.cat([t for j, t in enumerate(tokens) if j != i], dim=1)
            other_pads = torch.cat([p for j, p in enumerate(pads) if j != i], dim=1)
            attended, _ = attend(query, others, others, key_padding_mask=other_pads,
                                 need_weights=False)
            out.append(norm(query + self.drop(attended)))
        return out
