"""The training recipe: each hyper-parameter of a training run with its default, stated once.

Free of torch, so that the command line can show the defaults without loading it
(``Recipe.defaults()``); :func:`gemo.training.train` takes its defaults from here.
"""

from dataclasses import dataclass
from typing import Literal

from gemo.options import Options

# How the loss weighs each class: "balanced" is scikit-learn's n_samples / (n_classes * count),
# counted on the clips each model is fitted on (gemo.training.loop.class_weights).
CLASS_WEIGHTS = ("none", "balanced")


@dataclass(frozen=True)
class Recipe(Options):
    """Adam, cross-entropy and early stopping (Pinto 2020, section III-D); the same for the
    final and every fold model."""

    epochs: int = 200  # at most this many epochs a model
    lr: float = 1e-3  # Adam's learning rate
    patience: int = 15  # early stopping: epochs without a better hold-out loss
    folds: int = 5  # cross-fitting folds for out-of-fold train scores; < 2: none
    seed: int = 0
    holdout: float = 0.15  # share of the training clips (by source video) for early stopping
    batch_size: int | None = None  # None: the model family's default
    class_weight: Literal[CLASS_WEIGHTS] = "none"  # one of CLASS_WEIGHTS

    def check(self):
        if self.class_weight not in CLASS_WEIGHTS:
            return (f"class_weight must be one of {', '.join(CLASS_WEIGHTS)}, "
                    f"got {self.class_weight!r}")
        given = {"epochs": self.epochs, "lr": self.lr, "patience": self.patience}
        if self.batch_size is not None:
            given["batch_size"] = self.batch_size
        for key, value in given.items():
            if not value or value <= 0:
                return f"{key} must be positive, got {value!r}"
        return None

    def resolved(self, default_batch_size):
        """This recipe in plain ints and floats, with ``default_batch_size`` (the family's) if
        it has none."""
        return Recipe(epochs=int(self.epochs), lr=float(self.lr), patience=int(self.patience),
                      folds=int(self.folds), seed=int(self.seed), holdout=float(self.holdout),
                      batch_size=int(self.batch_size or default_batch_size),
                      class_weight=self.class_weight)

    def per_model(self):
        """What each model's loop uses, as config.json's ``recipe`` keeps it."""
        return {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr,
                "patience": self.patience, "holdout": self.holdout,
                "class_weight": self.class_weight}
