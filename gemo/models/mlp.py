"""``mlp``: a small fully connected network for one feature vector per clip (egemaps).

``layers`` hidden layers of ``hidden`` units (Linear -> ReLU -> Dropout); the
last hidden layer's output is the embedding, then a linear layer gives the
three class logits.
"""

from dataclasses import dataclass

from torch import nn

from gemo import options
from gemo.models.base import Model, register


@register
class MLP(Model):
    name = "mlp"
    input_kind = "vector"
    description = "fully connected net with dropout, for functionals (one vector per clip)"

    @dataclass(frozen=True)
    class Options(options.Options):
        hidden: int = 64
        layers: int = 2
        dropout: float = 0.3

    train_defaults = {"batch_size": 128}

    def __init__(self, **config):
        super().__init__(**config)
        o = self.options
        blocks, width = [], self.input_dim
        for _ in range(max(1, o.layers)):
            blocks += [nn.Linear(width, o.hidden), nn.ReLU(), nn.Dropout(o.dropout)]
            width = o.hidden
        self.body = nn.Sequential(*blocks)
        self.head = nn.Linear(width, self.num_classes)

    @property
    def embedding_dim(self):
        return self.options.hidden

    def embed(self, x):
        """``x``: ``[batch, features]``."""
        return self.body(x)
