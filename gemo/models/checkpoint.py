"""Self-describing checkpoints: plain values + tensors, loadable with ``weights_only=True``.

A checkpoint (``models/<name>/model.pt``) is one dict::

    format            "gemo-model/1"
    architecture      registry name, e.g. "blstm-attention"
    config            constructor keywords (input_dim, num_classes, options)
    state_dict        the weights
    standardization   {"mean": tensor, "std": tensor} fitted on the training clips
    classes           gemo.labels.CLASSES at training time
    features          {"set", "fingerprint", "extractor_version", "params", "feature_names"}
    hyperparameters   epochs, batch_size, lr, patience, seed, device, folds, ...
    training          best_epoch, holdout loss/accuracy, clip counts, pretrained source
    name, modality, gemo_version, torch_version, seed

Nothing in it needs unpickling code, so a checkpoint from anywhere loads safely:

>>> loaded = load_model("gemo-work/models/audio-pyaudio/model.pt")   # doctest: +SKIP
>>> loaded.model, loaded.features["fingerprint"]                     # doctest: +SKIP
"""

import io
import os
from dataclasses import dataclass

import numpy as np
import torch

import gemo
from gemo.errors import GemoError
from gemo.files import atomic_write
from gemo.labels import CLASSES
from gemo.models.base import create
from gemo.models.inputs import inputs_for

FORMAT = "gemo-model/1"


@dataclass
class LoadedModel:
    """A model rebuilt from a checkpoint, in eval mode, with its input pipeline."""

    model: torch.nn.Module
    inputs: object  # a gemo.models.inputs.Inputs with the stored standardisation
    checkpoint: dict

    @property
    def features(self):
        return self.checkpoint["features"]

    @property
    def name(self):
        return self.checkpoint["name"]


def build_checkpoint(*, model, inputs, name, modality, features, hyperparameters, training, seed):
    """The checkpoint dict of a trained ``model`` (see the module docstring)."""
    return plain({
        "format": FORMAT,
        "name": name,
        "modality": modality,
        "architecture": model.name,
        "config": dict(model.config),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "standardization": inputs.state(),
        "classes": list(CLASSES),
        "features": dict(features),
        "hyperparameters": dict(hyperparameters),
        "training": dict(training),
        "seed": int(seed),
        "gemo_version": gemo.__version__,
        "torch_version": str(torch.__version__),
    })


def plain(value):
    """``value`` with only the types ``torch.load(weights_only=True)`` accepts.

    numpy scalars become Python numbers, str subclasses (torch's TorchVersion)
    and paths become str, tuples lists; anything else is a bug, caught here
    rather than when someone loads the file.
    """
    if torch.is_tensor(value) or value is None or type(value) in (bool, int, float, str):
        return value
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (str, os.PathLike)):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in a checkpoint: {value!r}")


def save_checkpoint(path, checkpoint):
    """Write atomically: a crash leaves the previous checkpoint, never half a file."""
    atomic_write(path, lambda tmp: torch.save(checkpoint, tmp))


def load_checkpoint(path, *, data=None):
    """The checkpoint dict, loaded with ``weights_only=True`` (no code runs).

    ``data``: the file's bytes, already read (and checked) by the caller; ``path`` then
    only names it in messages (a bundle's member).
    """
    if data is None and not os.path.exists(path):
        raise GemoError(f"no model checkpoint at {path}: train it first (`gemo train`)")
    try:
        checkpoint = torch.load(path if data is None else io.BytesIO(data), map_location="cpu",
                                weights_only=True)
    except Exception as error:
        raise GemoError(f"{path}: not a loadable gemo checkpoint: {error}") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise GemoError(f"{path}: not a gemo model checkpoint ({FORMAT})")
    if list(checkpoint["classes"]) != list(CLASSES):
        raise GemoError(f"{path}: trained for classes {checkpoint['classes']}, "
                        f"this gemo has {list(CLASSES)}")
    return checkpoint


def load_model(path, *, device="cpu"):
    """Rebuild a trained model from ``path``: a :class:`LoadedModel` in eval mode."""
    return model_from_checkpoint(load_checkpoint(path), device=device)


def model_from_checkpoint(checkpoint, *, device="cpu"):
    """Rebuild a trained model from a loaded checkpoint dict: a :class:`LoadedModel`."""
    model = create(checkpoint["architecture"], **checkpoint["config"])
    model.load_state_dict(checkpoint["state_dict"])
    model.to(device).eval()
    return LoadedModel(model, inputs_for(model, checkpoint["standardization"]), checkpoint)
