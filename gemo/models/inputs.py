"""From cached arrays to model inputs: standardisation, padding, augmentation.

One class per input kind (see :data:`gemo.models.base.INPUT_KINDS`):

* ``sequence``: ``features [T, F]`` per clip, standardised per feature with the
  mean/std of the training clips' windows, zero-padded to the longest clip of a
  set; ``lengths`` tell the model where each clip ends.
* ``maps``: ``features [K, h, w, C]`` per clip (feature maps, channels last), standardised
  per channel and padded over time as a sequence.
* ``vector``: ``features [F]`` per clip, standardised per feature.
* ``faces``: ``embeddings [n, D]`` and ``frame_index [n]`` per clip (the ``fer`` set: one
  vector per face), standardised per feature with the mean/std of the training clips'
  faces, laid out as ``[K, faces, D]`` zero-padded to the most faces of a frame, with the
  faces of each frame counted.
* ``sequences``: one ``features [T_i, F_i]`` per feature set of a joint cache
  (:class:`gemo.training.features.JointCache`), each standardised with its own
  statistics, shortened to at most ``max_steps`` rows (means of equal chunks) and
  padded with its own lengths.
* ``frames``: ``frames [K, H, W, 3]`` uint8 per clip, resized to the model's
  ``input_size``, scaled to [0, 1] and normalised with the ImageNet mean/std
  (fixed, so the same inputs suit from-scratch and pretrained backbones).

Non-finite values (pyAudioAnalysis gives NaN on some windows) become 0 after
standardisation at inference, i.e. the training mean; clips holding any are
left out of training by :mod:`gemo.training` (Pinto 2020, section III-C).

The fitted statistics are plain tensors (:meth:`Inputs.state`), stored in the
checkpoint and restored with :func:`inputs_for`.
"""

import math

import numpy as np
import torch
from torch.nn import functional as F

from gemo.errors import GemoError
from gemo.models.base import INPUT_KINDS

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def inputs_for(model, state=None):
    """The input pipeline of ``model``'s kind; ``state`` restores fitted statistics."""
    kinds = {"sequence": SequenceInputs, "maps": MapInputs, "vector": VectorInputs,
             "frames": FrameInputs, "faces": FaceInputs, "sequences": SequencesInputs}
    return kinds[model.input_kind](model.options, state)


def is_finite(array):
    if isinstance(array, tuple):  # one array per set (sequences)
        return all(map(is_finite, array))
    return bool(np.isfinite(array).all()) if array.dtype.kind == "f" else True


class Inputs:
    """Base of the per-kind pipelines. ``array`` names the cached array used."""

    kind = ""  # a key of gemo.models.base.INPUT_KINDS
    array = "features"
    ndim = 0
    may_be_nonfinite = True  # float features can hold NaN; uint8 pixels cannot

    def __init__(self, options, state=None):
        self.options = options
        self.mean = None if state is None else state["mean"].float()
        self.std = None if state is None else state["std"].float()

    def check(self, clip_id, arrays, feature_set):
        """The clip's array, or a clear error when the feature set does not fit the model."""
        if self.array not in arrays:
            raise GemoError(f"{feature_set} clip {clip_id} has no {self.array!r} array "
                            f"(has {', '.join(sorted(arrays))}): this model does not fit it")
        array = arrays[self.array]
        if array.ndim != self.ndim:
            raise GemoError(f"{feature_set} gives {self.array} of shape {array.shape} per clip; "
                            f"the model expects {self.ndim} dimensions, {INPUT_KINDS[self.kind]}: "
                            "choose another --model")
        return array

    def fit(self, arrays):
        """Fit the standardisation on the training clips' arrays (all finite; an iterable)."""
        rows = np.concatenate([np.asarray(a, np.float64).reshape(-1, a.shape[-1]) for a in arrays])
        std = rows.std(axis=0)
        std[std < 1e-8] = 1.0  # constant features stay constant (0) instead of dividing by 0
        self.mean = torch.tensor(rows.mean(axis=0), dtype=torch.float32)
        self.std = torch.tensor(std, dtype=torch.float32)
        return self

    def state(self):
        return {"mean": self.mean.clone(), "std": self.std.clone()}

    def _standardise(self, array):
        x = (torch.from_numpy(np.asarray(array, np.float32)) - self.mean) / self.std
        return torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)

    def batch(self, tensors, *, train=False, generator=None):
        """Model inputs from a batch of stored tensors (augmentation when ``train``)."""
        return tuple(tensors)


class SequenceInputs(Inputs):
    kind = "sequence"
    ndim = 2

    def tensors(self, arrays, *, train=False):
        """``(x [N, T_max, F], lengths [N])``."""
        rows = [self._standardise(a) for a in arrays]
        lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
        x = torch.zeros(len(rows), int(lengths.max()), *rows[0].shape[1:])
        for i, r in enumerate(rows):
            x[i, : len(r)] = r
        return x, lengths


class MapInputs(SequenceInputs):
    """``(x [N, T_max, h, w, C], lengths [N])``: a sequence of maps, standardised per channel
    (over every frame and position of the training clips)."""

    kind = "maps"
    ndim = 4


class VectorInputs(Inputs):
    kind = "vector"
    ndim = 1

    def tensors(self, arrays, *, train=False):
        """``(x [N, F],)``."""
        return (torch.stack([self._standardise(a) for a in arrays]),)


class FaceInputs(Inputs):
    """The set of faces in each frame of a clip. A clip's checked array is ``[n, 1 + D]``: the
    face's frame index, then its vector (one array, as every kind's, so that the finiteness
    check and the loaders see one value per clip)."""

    kind = "faces"
    array = "embeddings"
    ndim = 2

    def check(self, clip_id, arrays, feature_set):
        if self.array not in arrays or "frame_index" not in arrays:
            raise GemoError(f"{feature_set} clip {clip_id} has no per-face embeddings and "
                            f"frame_index (has {', '.join(sorted(arrays))}): face-level models "
                            "read the fer set, version 3 or later "
                            "(`gemo extract --only fer --overwrite`)")
        embeddings = super().check(clip_id, arrays, feature_set)
        frame_of = np.asarray(arrays["frame_index"], np.float32).reshape(-1, 1)
        return np.concatenate([frame_of, np.asarray(embeddings, np.float32)], axis=1)

    def fit(self, arrays):
        faces = [np.asarray(a)[:, 1:] for a in arrays]
        if not sum(len(f) for f in faces):
            raise GemoError("no training clip has a face: face-level models need faces "
                            "(check the faces set's min_face_size and detector)")
        return super().fit(faces)

    def tensors(self, arrays, *, train=False):
        """``(x [N, K, F, D], counts [N, K])``: K the most frames, F the most faces of a frame;
        frames after a clip's last face count 0 faces, as do padded frames."""
        clips = [(np.asarray(a[:, 0], np.int64), self._standardise(a[:, 1:])) for a in arrays]
        frames = max([int(f.max()) + 1 for f, _ in clips if len(f)] + [1])
        counts = torch.zeros(len(clips), frames, dtype=torch.long)
        for i, (frame_of, _) in enumerate(clips):
            counts[i] = torch.from_numpy(np.bincount(frame_of, minlength=frames))
        x = torch.zeros(len(clips), frames, max(int(counts.max()), 1), len(self.mean))
        for i, (frame_of, faces) in enumerate(clips):
            for frame in np.unique(frame_of):
                mine = torch.from_numpy(np.flatnonzero(frame_of == frame))
                x[i, frame, : len(mine)] = faces[mine]
        return x, counts


class SequencesInputs(Inputs):
    """One sequence per feature set, each with its own :class:`SequenceInputs` statistics."""

    kind = "sequences"
    ndim = 2

    def __init__(self, options, state=None):
        self.options = options
        self.parts = (None if state is None else
                      [SequenceInputs(options, part) for part in state["parts"]])

    def check(self, clip_id, arrays, feature_set):
        """``(features of set 1, of set 2, ...)`` from a joint cache's ``{set: arrays}``."""
        return tuple(super(SequencesInputs, self).check(clip_id, part, name)
                     for name, part in arrays.items())

    def fit(self, arrays):
        columns = list(zip(*arrays))  # per set, every clip's array
        steps = self.options.max_steps  # statistics of what the model sees
        self.parts = [SequenceInputs(self.options).fit([_shorten(a, steps) for a in column])
                      for column in columns]
        return self

    def state(self):
        return {"parts": [part.state() for part in self.parts]}

    def tensors(self, arrays, *, train=False):
        """``(x_1 [N, T_1, F_1], lengths_1 [N], x_2, lengths_2, ...)``, one pair per set."""
        columns = list(zip(*arrays))
        steps = self.options.max_steps
        return tuple(tensor for part, column in zip(self.parts, columns, strict=True)
                     for tensor in part.tensors([_shorten(a, steps) for a in column]))


def _shorten(array, steps):
    """At most ``steps`` rows: the means of ``steps`` near-equal chunks of a longer array
    (attention costs the square of the length; 0 keeps every row)."""
    if not steps or len(array) <= steps:
        return array
    return np.stack([chunk.mean(axis=0) for chunk in np.array_split(array, steps)])


class FrameInputs(Inputs):
    kind = "frames"
    array = "frames"
    ndim = 4
    may_be_nonfinite = False

    def fit(self, arrays):
        # ImageNet statistics, not fitted: pretrained backbones expect exactly these.
        self.mean = torch.tensor(IMAGENET_MEAN)
        self.std = torch.tensor(IMAGENET_STD)
        return self

    def tensors(self, arrays, *, train=False):
        """``(frames [N, K, 3, S, S] uint8,)``; S is ``input_size``, or 8/7 of it for
        training so that random crops keep detail (as ImageNet's 256 -> 224).

        ``arrays`` may be a generator: clips are resized one at a time, so only the
        resized set is held in memory.
        """
        size = self.options.input_size
        out = []
        for array in arrays:
            target = min(array.shape[1], round(size * 8 / 7)) if train else size
            out.append(_resize(torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2),
                               target))
        counts = sorted({clip.shape[0] for clip in out})
        if len(counts) > 1:
            raise GemoError(f"clips have different frame counts {counts}: re-extract frames")
        return (torch.stack(out),)

    def batch(self, tensors, *, train=False, generator=None):
        (frames,) = tensors
        if train:
            frames = self._augment(frames, generator)
        x = frames.float().div_(255.0)
        return ((x - self.mean.view(1, 1, 3, 1, 1)) / self.std.view(1, 1, 3, 1, 1),)

    def _augment(self, frames, generator):
        """Random rotation (within +-``rotate`` degrees), resized crop and flip (one draw per
        clip, all its frames alike) and a random subset of ``train_frames`` frames per clip."""
        o = self.options
        count = frames.shape[1]
        keep = o.train_frames if 0 < o.train_frames < count else count
        out = []
        for clip in frames:
            if keep < count:
                picked = torch.randperm(count, generator=generator)[:keep].sort().values
                clip = clip[picked]
            if o.rotate:  # no draw at 0: the other draws stay those of a run without it
                turn = 2 * float(torch.rand((), generator=generator)) - 1  # in [-1, 1)
                clip = _rotate(clip, o.rotate * turn)
            clip = _random_resized_crop(clip, o.input_size, o.crop_scale, generator)
            if o.flip and torch.rand((), generator=generator) < 0.5:
                clip = clip.flip(-1)
            out.append(clip)
        return torch.stack(out)


def _resize(frames, size):
    """uint8 ``[K, 3, H, W]`` -> uint8 ``[K, 3, size, size]`` (antialiased bilinear)."""
    if frames.shape[-1] == size and frames.shape[-2] == size:
        return frames.contiguous()
    x = F.interpolate(frames.float(), size=(size, size), mode="bilinear", antialias=True,
                      align_corners=False)
    return x.round_().clamp_(0, 255).to(torch.uint8)


def _rotate(frames, degrees):
    """uint8 ``[K, 3, S, S]`` turned ``degrees`` counter-clockwise about the centre (bilinear);
    the corners it uncovers are black, as torchvision's ``RandomRotation`` leaves them."""
    angle = math.radians(degrees)
    cos, sin = math.cos(angle), math.sin(angle)
    # affine_grid maps output to input coordinates: the inverse turn, in [-1, 1] units (square).
    theta = torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0]]).expand(len(frames), 2, 3)
    grid = F.affine_grid(theta, list(frames.shape), align_corners=False)
    x = F.grid_sample(frames.float(), grid, mode="bilinear", padding_mode="zeros",
                      align_corners=False)
    return x.round_().clamp_(0, 255).to(torch.uint8)


def _random_resized_crop(frames, size, min_scale, generator):
    """A crop of area fraction in [min_scale, 1] and aspect ratio in [3/4, 4/3], resized."""
    height, width = frames.shape[-2:]
    u = torch.rand(4, generator=generator).tolist()
    area = height * width * (min_scale + (1.0 - min_scale) * u[0])
    ratio = math.exp(math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * u[1])
    w = min(width, max(1, round(math.sqrt(area * ratio))))
    h = min(height, max(1, round(math.sqrt(area / ratio))))
    top = int(u[2] * (height - h + 1))
    left = int(u[3] * (width - w + 1))
    return _resize(frames[..., top : top + h, left : left + w], size)
