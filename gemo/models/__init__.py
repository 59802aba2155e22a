"""Model families, registered by name.

Every module in this package that defines a :class:`Model` subclass with
``@register`` is imported here, so adding a model family is one new module.

>>> from gemo import models
>>> models.available()
['blstm-attention', 'cnn-blstm', 'convlstm', 'cross-attention', 'face-lstm', 'fea', 'feb',
 'frame-classifier', 'frame-cnn', 'logreg', 'mlp', 'nvpf', 'svm', 'temporal-head', 'tnvpf']
>>> models.create("mlp", input_dim=88).config["hidden"]
64
>>> models.default_model("pyaudio")
'blstm-attention'
"""

import importlib
import pkgutil

from gemo.models.base import (
    DEFAULT_MODELS,
    INPUT_KINDS,
    Model,
    available,
    create,
    default_model,
    get,
    register,
)

# Modules that hold helpers rather than model families.
_SUPPORT = {"backbones", "base", "checkpoint", "i3d", "inputs", "resnet3d"}

for _module in pkgutil.iter_modules(__path__):
    if _module.name not in _SUPPORT:
        importlib.import_module(f"{__name__}.{_module.name}")

from gemo.models.checkpoint import LoadedModel, load_checkpoint, load_model  # noqa: E402

__all__ = [
    "DEFAULT_MODELS",
    "INPUT_KINDS",
    "LoadedModel",
    "Model",
    "available",
    "create",
    "default_model",
    "get",
    "load_checkpoint",
    "load_model",
    "register",
]
