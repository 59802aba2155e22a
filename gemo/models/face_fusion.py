"""Face-level fusion (Quach et al.): ``fea``, ``feb``, ``nvpf`` and ``tnvpf``.

They read the set of faces in each frame of a clip (the ``faces`` input kind: the ``fer``
set's per-face embeddings, ``x [batch, K frames, F faces, D]`` zero-padded, with the faces of
each frame counted), where ``face-lstm`` sees only per-frame statistics of the expressions.

* ``fea`` (FeA, "averaging score"): a per-face classifier trained on faces labelled with their
  clip's class; a clip's probabilities are its faces' averaged over each frame, then over the
  frames.
* ``feb`` (FeB, "concat feature"): each frame's faces pooled (mean and max, concatenated),
  averaged over the frames, then a classifier.
* ``nvpf`` (FeC, Non-Volume Preserving Fusion, section 3.2): affine coupling units map each
  face's vector to a latent of the same size, conditioned on the other faces of its frame; a
  Gaussian per class models the latents, and a clip's class is the one under whose Gaussian
  its faces are likeliest.
* ``tnvpf`` (section 3.3): the same flow per frame, then a GRU over the frames' fused latents.

See docs/faces.md for how these follow the paper and where they simplify it.

>>> model = create("nvpf", input_dim=128)                     # doctest: +SKIP
>>> model(torch.zeros(2, 5, 16, 128), torch.full((2, 5), 3))  # doctest: +SKIP
"""

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from gemo import options
from gemo.models.base import Model, register


def face_mask(x, counts):
    """``[B, K, F]``: True where ``x [B, K, F, D]`` holds a face rather than padding."""
    return torch.arange(x.shape[2], device=x.device) < counts.unsqueeze(-1)


def frame_mean(values, mask):
    """Mean of per-face ``values [B, K, F, E]`` over each frame's faces: ``[B, K, E]``, 0 for a
    frame without faces."""
    kept = values.masked_fill(~mask.unsqueeze(-1), 0.0)
    return kept.sum(2) / mask.sum(2, keepdim=True).clamp(min=1).to(values.dtype)


def clip_mean(values, valid):
    """Mean of per-frame ``values [B, K, E]`` over the frames ``valid [B, K]`` (those with
    faces): each frame counts as one group picture. 0 for a clip without faces."""
    kept = values.masked_fill(~valid.unsqueeze(-1), 0.0)
    return kept.sum(1) / valid.sum(1, keepdim=True).clamp(min=1).to(values.dtype)


def pool_faces(values, mask):
    """Per-face ``values [B, K, F, E]`` averaged over each frame's faces, then over frames."""
    return clip_mean(frame_mean(values, mask), mask.any(2))


class FaceModel(Model):
    """A family over the faces of each frame (batch size 32, as face-lstm)."""

    input_kind = "faces"
    train_defaults = {"batch_size": 32}


@dataclass(frozen=True)
class _Layers(options.Options):
    hidden: int = 64
    dropout: float = 0.3


@register
class FeA(FaceModel):
    name = "fea"
    description = ("per-face classifier trained on faces with their clip's label; probabilities "
                   "averaged over faces and frames (Quach's FeA)")
    Options = _Layers

    def __init__(self, **config):
        super().__init__(**config)
        o = self.options
        self.face = nn.Sequential(nn.Linear(self.input_dim, o.hidden), nn.ReLU(),
                                  nn.Dropout(o.dropout))
        self.classify = nn.Linear(o.hidden, self.num_classes)
        self.head = AveragedScores(self.num_classes)

    @property
    def embedding_dim(self):
        return self.options.hidden + self.num_classes

    def embed(self, x, counts):
        """The faces' mean hidden vector, then their mean probabilities (uniform without faces)."""
        mask = face_mask(x, counts)
        hidden = self.face(x)
        logits = self.classify(hidden)
        self._faces = (logits, mask)  # for loss(): FeA learns from each face
        probs = pool_faces(torch.softmax(logits, -1), mask)
        has_faces = mask.flatten(1).any(1, keepdim=True)
        probs = torch.where(has_faces, probs, torch.full_like(probs, 1 / self.num_classes))
        return torch.cat([pool_faces(hidden, mask), probs], 1)

    def loss(self, logits, labels, *, weight=None, label_smoothing=0.0):
        """Cross-entropy of every face against its clip's label (a face-level classifier)."""
        face_logits, mask = self._faces
        if not mask.any():
            return logits.sum() * 0.0
        per_face = labels.view(-1, 1, 1).expand_as(mask)
        return F.cross_entropy(face_logits[mask].float(), per_face[mask], weight=weight,
                               label_smoothing=label_smoothing)


class AveragedScores(nn.Module):
    """Embedding -> logits: the log of its last ``classes`` values, the averaged probabilities."""

    def __init__(self, classes):
        super().__init__()
        self.classes = classes

    def forward(self, embedding):
        return embedding[:, -self.classes:].clamp(min=1e-7).log()


@register
class FeB(FaceModel):
    name = "feb"
    description = ("face vectors pooled per frame (mean and max), averaged over frames, then a "
                   "classifier (Quach's FeB)")
    Options = _Layers

    def __init__(self, **config):
        super().__init__(**config)
        o = self.options
        self.body = nn.Sequential(nn.Linear(2 * self.input_dim, o.hidden), nn.ReLU(),
                                  nn.Dropout(o.dropout))
        self.head = nn.Linear(o.hidden, self.num_classes)

    @property
    def embedding_dim(self):
        return self.options.hidden

    def embed(self, x, counts):
        mask = face_mask(x, counts)
        valid = mask.any(2)
        most = x.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(2)
        most = most.masked_fill(~valid.unsqueeze(-1), 0.0)
        frames = torch.cat([frame_mean(x, mask), most], -1)
        return self.body(clip_mean(frames, valid))


class _Residual(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.block = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width))

    def forward(self, x):
        return F.relu(x + self.block(x))


class AffineCoupling(nn.Module):
    """One fusion unit: Real NVP's affine coupling (Dinh et al. 2017; Quach eq. 6).

    One half of each face's vector passes unchanged and conditions the other half's scale
    ``exp(s)`` and shift ``t``, through a residual network that reads the face's own half and
    its mean over the faces of the frame: that mean is where faces meet. ``flip`` swaps the
    halves. The Jacobian, with the conditioning halves of every face ordered first, is
    triangular, so ``log |det|`` is the sum of ``s``.
    """

    def __init__(self, dim, hidden, flip):
        super().__init__()
        self.split, self.flip = dim // 2, flip
        conditioning = dim - self.split if flip else self.split
        changed = dim - conditioning
        self.net = nn.Sequential(nn.Linear(2 * conditioning, hidden), nn.ReLU(),
                                 _Residual(hidden), nn.Linear(hidden, 2 * changed))
        # The unit starts as the identity (Glow's zero-initialised last layer).
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)
        self.scale = nn.Parameter(torch.ones(changed))  # s = scale * tanh(.) (Real NVP)

    def _halves(self, x):
        a, b = x[..., : self.split], x[..., self.split :]
        return (b, a) if self.flip else (a, b)  # (conditioning, changed)

    def _join(self, conditioning, changed):
        return torch.cat([changed, conditioning] if self.flip else [conditioning, changed], -1)

    def _scale_shift(self, conditioning, mask):
        context = frame_mean(conditioning, mask).unsqueeze(2).expand_as(conditioning)
        s, t = self.net(torch.cat([conditioning, context], -1)).chunk(2, -1)
        return self.scale * torch.tanh(s), t

    def forward(self, x, mask):
        """``(y, log |det| per face [B, K, F])``; padded faces come out as zeros."""
        conditioning, changed = self._halves(x)
        s, t = self._scale_shift(conditioning, mask)
        y = self._join(conditioning, changed * torch.exp(s) + t)
        return y.masked_fill(~mask.unsqueeze(-1), 0.0), (s * mask.unsqueeze(-1)).sum(-1)

    def inverse(self, y, mask):
        conditioning, changed = self._halves(y)
        s, t = self._scale_shift(conditioning, mask)
        x = self._join(conditioning, (changed - t) * torch.exp(-s))
        return x.masked_fill(~mask.unsqueeze(-1), 0.0)


class FaceFlow(nn.Module):
    """Quach's F (eq. 5): ``units`` couplings, alternating halves; faces -> latents, log |det|."""

    def __init__(self, dim, units, hidden):
        super().__init__()
        self.units = nn.ModuleList(AffineCoupling(dim, hidden, flip=i % 2 == 1)
                                   for i in range(units))

    def forward(self, x, mask):
        logdet = torch.zeros(mask.shape, dtype=x.dtype, device=x.device)
        for unit in self.units:
            x, part = unit(x, mask)
            logdet = logdet + part
        return x, logdet

    def inverse(self, h, mask):
        for unit in reversed(self.units):
            h = unit.inverse(h, mask)
        return h


class ClassGaussians(nn.Module):
    """A diagonal Gaussian per class over face latents (Quach: "a different Gaussian
    distribution ... for each emotion class").

    Called on ``[mean latent, mean squared latent]`` of a set of faces, it gives each class's
    mean log-likelihood of those faces: the log-likelihood is linear in those two moments, so
    the pooled moments are the set's whole say in the decision (and its embedding).
    """

    def __init__(self, classes, dim):
        super().__init__()
        self.mean = nn.Parameter(0.1 * torch.randn(classes, dim))  # distinct, to break symmetry
        self.log_std = nn.Parameter(torch.zeros(classes, dim))

    def log_likelihood(self, first, second):
        """``first``, ``second`` ``[..., D]`` -> ``[..., C]`` mean log N(h; class mean, std)."""
        first, second = first.unsqueeze(-2), second.unsqueeze(-2)
        squared = second - 2 * first * self.mean + self.mean**2  # mean of (h - mean)^2
        return -0.5 * (squared * torch.exp(-2 * self.log_std) + 2 * self.log_std
                       + math.log(2 * math.pi)).sum(-1)

    def forward(self, embedding):
        return self.log_likelihood(*embedding.chunk(2, -1))


@dataclass(frozen=True)
class _FlowOptions(options.Options):
    units: int = 10  # fusion units (Quach: 10)
    hidden: int = 32  # width of each unit's network (Quach: 32 filters)
    nll_weight: float = 1.0  # weight of the flow's negative log-likelihood (eq. 7), per dimension


def _flow_nll(class_loglik, logdet, labels, valid, weight, dim):
    """Eq. 7 per dimension, ``-(log p_label(h) + log |det|) / D``, averaged over the ``valid``
    entries (weighted by ``weight[label]`` when given); ``class_loglik [..., C]``."""
    picked = class_loglik.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    share = valid.to(picked.dtype) * (1.0 if weight is None else weight[labels])
    nll = -(picked + logdet) / dim
    return (nll * share).sum() / share.sum().clamp(min=1e-8)


@register
class NVPF(FaceModel):
    name = "nvpf"
    description = ("non-volume-preserving flow over each frame's faces, a Gaussian per class in "
                   "the latent space; class by the faces' likelihood (Quach's NVPF / FeC)")
    Options = _FlowOptions

    def __init__(self, **config):
        super().__init__(**config)
        o = self.options
        self.flow = FaceFlow(self.input_dim, o.units, o.hidden)
        self.head = ClassGaussians(self.num_classes, self.input_dim)

    @property
    def embedding_dim(self):
        return 2 * self.input_dim

    def embed(self, x, counts):
        """The latents' mean and mean square over each frame's faces, then over frames."""
        mask = face_mask(x, counts)
        h, logdet = self.flow(x, mask)
        self._logdet = (pool_faces(logdet.unsqueeze(-1), mask).squeeze(-1),
                        mask.flatten(1).any(1))  # for loss()
        return torch.cat([pool_faces(h, mask), pool_faces(h * h, mask)], -1)

    def loss(self, logits, labels, *, weight=None, label_smoothing=0.0):
        """Cross-entropy of the class likelihoods plus ``nll_weight`` times the flow's
        class-conditional negative log-likelihood (eq. 7)."""
        logdet, has_faces = self._logdet
        nll = _flow_nll(logits, logdet.float(), labels, has_faces, weight, self.input_dim)
        return (F.cross_entropy(logits, labels, weight=weight, label_smoothing=label_smoothing)
                + self.options.nll_weight * nll)


@dataclass(frozen=True)
class _TemporalOptions(_FlowOptions):
    memory: int = 64  # GRU units (Quach: 4096)


@register
class TNVPF(FaceModel):
    name = "tnvpf"
    description = ("NVPF per frame, then a GRU over the frames' fused latents; class from its "
                   "last state (Quach's TNVPF)")
    Options = _TemporalOptions

    def __init__(self, **config):
        super().__init__(**config)
        o = self.options
        self.flow = FaceFlow(self.input_dim, o.units, o.hidden)
        self.gaussians = ClassGaussians(self.num_classes, self.input_dim)
        self.gru = nn.GRUCell(2 * self.input_dim, o.memory)
        self.head = nn.Linear(o.memory, self.num_classes)

    @property
    def embedding_dim(self):
        return self.options.memory

    def embed(self, x, counts):
        """The GRU's state after the last frame with faces (frames without faces are skipped)."""
        mask = face_mask(x, counts)
        valid = mask.any(2)
        h, logdet = self.flow(x, mask)
        first, second = frame_mean(h, mask), frame_mean(h * h, mask)
        state = x.new_zeros(len(x), self.options.memory)
        states = []
        for t in range(x.shape[1]):
            step = self.gru(torch.cat([first[:, t], second[:, t]], -1), state)
            state = torch.where(valid[:, t, None], step, state)
            states.append(state)
        self._frames = (self.head(torch.stack(states, 1)),  # per-frame predictions (eq. 8)
                        self.gaussians.log_likelihood(first, second),
                        frame_mean(logdet.unsqueeze(-1), mask).squeeze(-1), valid)
        return state

    def loss(self, logits, labels, *, weight=None, label_smoothing=0.0):
        """Eq. 8, the cross-entropy of the prediction after each frame with faces (every frame
        takes the clip's label), plus ``nll_weight`` times the flow's class-conditional
        negative log-likelihood of each frame's faces (eq. 7)."""
        steps, class_loglik, logdet, valid = self._frames
        if not valid.any():
            return F.cross_entropy(logits, labels, weight=weight, label_smoothing=label_smoothing)
        per_frame = labels.view(-1, 1).expand_as(valid)
        ce = F.cross_entropy(steps[valid].float(), per_frame[valid], weight=weight,
                             label_smoothing=label_smoothing)
        nll = _flow_nll(class_loglik.float(), logdet.float(), per_frame, valid, weight,
                        self.input_dim)
        return ce + self.options.nll_weight * nll
