"""The training recipe: each hyper-parameter of a training run with its default, stated once.

Free of torch, so that the command line can show the defaults without loading it
(``Recipe.defaults()``); :func:`gemo.training.train` takes its defaults from here.
The defaults are Pinto 2020's loop (Adam, cross-entropy, early stopping); the other
choices (optimizer, weight decay, label smoothing, schedule, backbone learning rate,
mixed precision, full-train) are off by default, so that earlier results stay.
"""

import math
from dataclasses import dataclass, replace
from typing import Literal

from gemo.options import Options

# How the loss weighs each class: "balanced" is scikit-learn's n_samples / (n_classes * count),
# counted on the clips each model is fitted on (gemo.training.loop.class_weights).
CLASS_WEIGHTS = ("none", "balanced")
OPTIMIZERS = ("adam", "adamw", "sgd")
# Schedules are functions of the epoch alone (no plateau on the hold-out loss): a full-train
# run, which has no hold-out, then follows the same learning rates as the run it copies.
SCHEDULES = ("none", "cosine", "step")
# Options only a gradient loop uses (a classical model refuses them), beside the core ones.
LOOP_OPTIONS = ("optimizer", "momentum", "nesterov", "weight_decay", "label_smoothing",
                "schedule", "step_every", "step_factor", "backbone_lr_scale", "amp")


@dataclass(frozen=True)
class Recipe(Options):
    """Adam, cross-entropy and early stopping (Pinto 2020, section III-D); the same for the
    final and every fold model."""

    epochs: int = 200  # at most this many epochs a model (and the cosine schedule's length)
    lr: float = 1e-3  # the optimizer's learning rate
    patience: int = 15  # early stopping: epochs without a better hold-out loss
    folds: int = 5  # cross-fitting folds for out-of-fold train scores; < 2: none
    seed: int = 0
    holdout: float = 0.15  # share of the training clips (by source video) for early stopping
    batch_size: int | None = None  # None: the model family's default
    class_weight: Literal[CLASS_WEIGHTS] = "none"  # one of CLASS_WEIGHTS
    optimizer: Literal[OPTIMIZERS] = "adam"
    momentum: float = 0.9  # sgd only
    nesterov: bool = False  # sgd only
    weight_decay: float = 0.0  # L2 in adam and sgd, decoupled in adamw
    label_smoothing: float = 0.0  # share of the target spread evenly over the classes
    schedule: Literal[SCHEDULES] = "none"  # the learning rate per epoch: lr_factor()
    step_every: int = 30  # step schedule: epochs between two drops
    step_factor: float = 0.1  # step schedule: the learning rate's factor at each drop
    backbone_lr_scale: float = 1.0  # the backbone's learning rate is lr times this
    amp: bool = False  # mixed precision (CUDA only)
    full_train: bool = False  # train on train+val for a fixed number of epochs (Pinto 2020)

    def check(self):
        for key, choices in (("class_weight", CLASS_WEIGHTS), ("optimizer", OPTIMIZERS),
                             ("schedule", SCHEDULES)):
            if getattr(self, key) not in choices:
                return f"{key} must be one of {', '.join(choices)}, got {getattr(self, key)!r}"
        given = {"epochs": self.epochs, "lr": self.lr, "patience": self.patience,
                 "step_every": self.step_every, "step_factor": self.step_factor,
                 "backbone_lr_scale": self.backbone_lr_scale}
        if self.batch_size is not None:
            given["batch_size"] = self.batch_size
        for key, value in given.items():
            if not value or value <= 0:
                return f"{key} must be positive, got {value!r}"
        if self.step_factor > 1:
            return f"step_factor must be at most 1, got {self.step_factor!r}"
        if not 0 <= self.momentum < 1:
            return f"momentum must be in [0, 1), got {self.momentum!r}"
        if self.weight_decay < 0:
            return f"weight_decay must be >= 0, got {self.weight_decay!r}"
        if not 0 <= self.label_smoothing < 1:
            return f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}"
        # Options of another choice would be recorded but do nothing: refused, not ignored.
        if self.optimizer != "sgd" and (self.momentum != Recipe.momentum or self.nesterov):
            return (f"momentum and nesterov are sgd's: add --optimizer sgd "
                    f"({self.optimizer} has none)")
        if self.nesterov and not self.momentum:
            return "nesterov needs a momentum > 0"
        if self.schedule != "step" and (self.step_every != Recipe.step_every
                                        or self.step_factor != Recipe.step_factor):
            return "step_every and step_factor are the step schedule's: add --schedule step"
        return None

    def changed_loop_options(self):
        """Names of the options set away from their defaults that only a gradient loop uses
        (a classical model, fitted by its own grid search, refuses them)."""
        return [key for key in LOOP_OPTIONS if getattr(self, key) != getattr(Recipe, key)]

    def resolved(self, default_batch_size):
        """This recipe in plain ints and floats, with ``default_batch_size`` (the family's) if
        it has none."""
        return replace(self, epochs=int(self.epochs), lr=float(self.lr),
                       patience=int(self.patience), folds=int(self.folds), seed=int(self.seed),
                       holdout=float(self.holdout),
                       batch_size=int(self.batch_size or default_batch_size),
                       momentum=float(self.momentum), nesterov=bool(self.nesterov),
                       weight_decay=float(self.weight_decay),
                       label_smoothing=float(self.label_smoothing),
                       step_every=int(self.step_every), step_factor=float(self.step_factor),
                       backbone_lr_scale=float(self.backbone_lr_scale), amp=bool(self.amp),
                       full_train=bool(self.full_train))

    def per_model(self):
        """What each model's loop uses, as config.json's ``recipe`` keeps it."""
        return {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr,
                "patience": self.patience, "holdout": self.holdout,
                "class_weight": self.class_weight,
                **{key: getattr(self, key) for key in LOOP_OPTIONS}}

    def lr_factor(self, epoch):
        """The learning rate's multiplier in ``epoch`` (1-based) under ``schedule``: cosine
        from 1 towards 0 over ``epochs`` (epoch by epoch, as torch's ``CosineAnnealingLR``
        with ``T_max=epochs``), or ``step_factor`` once more every ``step_every`` epochs.

        >>> [round(Recipe(schedule="cosine", epochs=4).lr_factor(e), 3) for e in (1, 2, 3, 4)]
        [1.0, 0.854, 0.5, 0.146]
        >>> step = Recipe(schedule="step", step_every=2, step_factor=0.5)
        >>> [step.lr_factor(e) for e in (1, 2, 3, 5)]
        [1.0, 1.0, 0.5, 0.25]
        """
        if self.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * (epoch - 1) / self.epochs))
        if self.schedule == "step":
            return self.step_factor ** ((epoch - 1) // self.step_every)
        return 1.0
