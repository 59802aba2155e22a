"""Train a model per modality on a feature cache; out-of-fold scores for the train split.

- ``recipe``: :class:`Recipe`, every hyper-parameter with its default (no torch)
- ``run``: :func:`train` and :func:`predict`: cache in, checkpoint and score table out
- ``crossfit``: fold models and the final model, and which clip each one scores
- ``splits``: grouped, stratified cross-fitting folds and the early-stopping hold-out
- ``loop``: the one training loop (optimizer, schedule, early stopping, mixed precision), seeding
- ``features``: the cache as training reads it, and :func:`check_features`
- ``plots``: loss and accuracy curves

Names are imported on first use, so that ``gemo.training.recipe`` (the command
line's defaults) loads without torch.

>>> from gemo.training import train
>>> summary = train(workspace=Workspace("work"), modality="audio", features="pyaudio")  # doctest: +SKIP
"""

import importlib

_HOME = {
    "Recipe": "recipe",
    "train": "run", "predict": "run", "score_cached": "run",
    "assign_folds": "splits", "holdout_split": "splits",
    "fit_model": "loop", "evaluate": "loop", "predict_arrays": "loop",
    "check_features": "features",
    "plot_curves": "plots",
}

__all__ = sorted(_HOME)


def __getattr__(name):
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
    globals()[name] = value  # once: later lookups do not come here
    return value


def __dir__():
    return sorted(set(globals()) | set(_HOME))
