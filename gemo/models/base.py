"""The model contract and the registry.

A model family is a :class:`Model` subclass registered with ``@register``. Its
constructor takes only plain keyword values (``input_dim``, ``num_classes`` and
the family's ``defaults``), so ``create(ckpt["architecture"], **ckpt["config"])``
rebuilds it from a checkpoint.
"""

from dataclasses import dataclass

from torch import nn
from torch.nn import functional as F

from gemo.errors import GemoError
from gemo.extractors.embeddings import EMBEDDING_BACKBONES, MAP_BACKBONES, MAPS_PREFIX, PREFIX
from gemo.labels import N_CLASSES
from gemo import options as typed
from gemo.registry import Registry


# What each kind of input looks like per clip, for messages and default choice.
INPUT_KINDS = {
    "sequence": "a [time, features] array per clip (e.g. pyaudio, compare-lld, mel)",
    "vector": "one feature vector per clip (e.g. egemaps functionals)",
    "frames": "K RGB frames per clip (the frames feature set)",
    "maps": "K feature maps [K, h, w, channels] per clip (the maps-<backbone> sets)",
    "faces": "a vector per face in each of K frames per clip (the fer set's embeddings)",
    "sequences": "a [time, features] array per clip from each of several feature sets "
                 "(gemo train multimodal --features A,B)",
}

# Which family a feature set gets when `model=` is not given.
DEFAULT_MODELS = {
    "pyaudio": "blstm-attention",
    "compare-lld": "blstm-attention",
    "mel": "cnn-blstm",
    "egemaps": "mlp",
    "frames": "frame-cnn",
    "fer": "face-lstm",
    "pose": "face-lstm",  # Fusical's pose model: Bi-LSTM, FC, softmax, as its face model
    # cached backbone embeddings [K or T', width]: only a small head trains
    **{PREFIX + backbone: "temporal-head" for backbone in EMBEDDING_BACKBONES},
    # cached feature maps [K, grid, grid, C]: Fusical's ConvLSTM heads
    **{MAPS_PREFIX + backbone: "convlstm" for backbone in MAP_BACKBONES},
}


class Model(nn.Module):
    """A classifier over one clip's features.

    Subclasses set ``name``, ``input_kind`` (a key of :data:`INPUT_KINDS`),
    ``description``, ``Options`` (a frozen :class:`gemo.options.Options`
    dataclass: every option with its type and default) and
    ``train_defaults`` (training hyper-parameters the family prefers, e.g.
    ``batch_size``), and implement :meth:`embed` (clip -> penultimate vector)
    and set ``self.head`` (embedding -> logits). ``inputs`` is the tuple of
    tensors a batch holds: ``(x,)`` or ``(x, lengths)`` for sequences.
    """

    name = ""
    input_kind = ""
    description = ""
    train_defaults = {}

    @dataclass(frozen=True)
    class Options(typed.Options):
        """No options (a family with some defines its own ``Options``)."""

    def __init__(self, *, input_dim, num_classes=N_CLASSES, **options):
        super().__init__()
        self.options = self.Options.parse(options, owner=f"model {self.name}", word="option")
        self.input_dim = int(input_dim)
        self.num_classes = int(num_classes)

    @property
    def config(self):
        """Constructor keywords, plain types only (stored in checkpoints)."""
        return {"input_dim": self.input_dim, "num_classes": self.num_classes,
                **self.options.as_dict()}

    def embed(self, *inputs):
        """Penultimate embedding ``[batch, embedding_dim]``."""
        raise NotImplementedError

    def forward(self, *inputs):
        """Class logits ``[batch, num_classes]``."""
        return self.head(self.embed(*inputs))

    def loss(self, logits, labels, *, weight=None, label_smoothing=0.0):
        """The training loss of a batch whose forward pass gave ``logits``: cross-entropy.

        A family trained on more than its clip scores (per-face or per-frame terms, a
        likelihood) overrides it, reading what its last forward pass kept.
        """
        return F.cross_entropy(logits, labels, weight=weight, label_smoothing=label_smoothing)


def _check_input_kind(cls):
    if cls.input_kind not in INPUT_KINDS:
        raise ValueError(f"model {cls.name}: input_kind must be one of {sorted(INPUT_KINDS)}")


_REGISTRY = Registry("model", check=_check_input_kind)
register, available, get = _REGISTRY.register, _REGISTRY.available, _REGISTRY.get
registered = _REGISTRY.registered  # a class registered inside a with block (tests)


def create(name, **config):
    """A model instance: ``create("mlp", input_dim=88, hidden=64)``."""
    return get(name)(**config)


def default_model(feature_set, *, ndim=None):
    """The family used for ``feature_set`` when none is asked for.

    Unknown feature sets are matched by the shape of their per-clip array:
    ``ndim`` 1 -> ``mlp``, 2 -> ``blstm-attention``, 4 (frames) -> ``frame-cnn``; a comma
    list of sets -> ``cross-attention``.
    """
    if feature_set in DEFAULT_MODELS:
        return DEFAULT_MODELS[feature_set]
    if "," in feature_set:  # several sets: a multimodal model
        return "cross-attention"
    by_ndim = {1: "mlp", 2: "blstm-attention", 4: "frame-cnn"}
    if ndim in by_ndim:
        return by_ndim[ndim]
    raise GemoError(f"no default model for feature set {feature_set!r}: choose one with "
                    f"--model NAME (available: {', '.join(available())})")


def count_parameters(model):
    return sum(p.numel() for p in model.parameters())

