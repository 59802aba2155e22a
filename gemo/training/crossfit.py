"""Cross-fitting: fold models score the source videos they never saw, the final model the rest.

:class:`Runner` trains one model with the recipe (hold-out split, seeding,
progress), for every fold and the final model; :func:`cross_fit` drives it. A
classical model (:mod:`gemo.models.classical`) is fitted by its own grid search
instead of the loop; everything after the fit is the same for every model.
"""

import time
from contextlib import contextmanager
from dataclasses import dataclass, replace

import numpy as np
import torch

from gemo import models
from gemo.models.classical import Classical
from gemo.models.inputs import inputs_for
from gemo.progress import ProgressDisplay
from gemo.training.loop import (_deterministic, _seed_everything, class_weights, fit_model,
                                predict_arrays)
from gemo.training.splits import holdout_split

EPOCHS_PER_LINE = 10  # progress in a log file: a line per this many epochs of each model


@dataclass(frozen=True)
class Score:
    """One clip's row of a score table."""

    probs: np.ndarray
    embedding: np.ndarray
    oof: bool  # scored by a fold model that never saw the clip's source video


@dataclass
class FitResult:
    """One trained model (fold or final) with its curves and hold-out figures; a classical
    model has no epochs nor hold-out (None) but its grid ``search``."""

    model: torch.nn.Module
    inputs: object
    history: dict
    best_epoch: int
    best_loss: float | None
    best_accuracy: float | None
    n_fit: int
    n_holdout: int
    seconds: float
    search: dict | None = None  # Classical.fit's report: chosen parameters, score, candidates

    def summary(self, *, with_curves=False):
        out = {"best_epoch": self.best_epoch, "holdout_loss": self.best_loss,
               "holdout_accuracy": self.best_accuracy,
               "epochs_run": len(self.history["train_loss"]),
               "n_fit": self.n_fit, "n_holdout": self.n_holdout, "seconds": round(self.seconds, 2)}
        if self.search is not None:
            out["search"] = self.search
        if with_curves:
            out.update(self.history)
        else:
            out["holdout_loss_curve"] = self.history["holdout_loss"]
        return out


@dataclass
class CrossFit:
    """What :func:`cross_fit` made."""

    scores: dict  # clip id -> Score, every clip
    final: FitResult
    folds: list  # each fold model's FitResult.summary()


def cross_fit(runner, *, name, clips, labelled, usable, fold_of, seed, final_extra=()):
    """Fold models score their held-out source videos (oof=True); the final model, trained
    on every usable labelled train clip (and ``final_extra``: the labelled val clips of a
    full-train run), scores the rest (val, test, unlabelled train).

    Embeddings all come from the final model, train rows too: a fusion over embeddings
    (Fusical's early fusion) must fit and predict in one encoder's space, and each fold
    model has a space of its own (docs/training.md).
    """
    scores, histories = {}, []
    folds = sorted(set(fold_of.values()))
    for fold in folds:
        fit = [c for c in labelled if fold_of[c.id] != fold and c.id in usable]
        held = [c.id for c in labelled if fold_of[c.id] == fold]
        result = runner.fit(fit, seed=seed + 1 + fold, label=f"{name} fold {fold + 1}/{len(folds)}")
        histories.append(result.summary())
        scores.update(runner.score(result, held, oof=True))
    final = runner.fit([c for c in (*labelled, *final_extra) if c.id in usable], seed=seed,
                       label=f"{name} final")
    for clip_id, score in runner.score(final, [c.id for c in clips], oof=False).items():
        if clip_id in scores:  # a fold model's probabilities, the final model's embedding
            score = replace(scores[clip_id], embedding=score.embedding)
        scores[clip_id] = score
    return CrossFit(scores, final, histories)


class Runner:
    """Trains one model with the recipe: used for every fold and the final model."""

    def __init__(self, *, family, config, recipe, arrays, device, pretrained, progress,
                 fixed_epochs=None):
        self.family, self.config, self.recipe = family, config, recipe
        self.fixed_epochs = fixed_epochs  # full-train: this many epochs, no hold-out
        self.arrays, self.device = arrays, device
        self.pretrained = pretrained  # (backbone state, source) or None
        self.progress = progress
        self.display, self.threads = None, torch.get_num_threads()

    @contextmanager
    def session(self, seed):
        with _deterministic(seed), ProgressDisplay(enabled=self.progress) as display:
            self.display, self.threads = display, torch.get_num_threads()
            try:
                yield self
            finally:
                self.display = None

    def fit(self, clips, *, seed, label):
        started = time.perf_counter()
        _seed_everything(seed)
        model = models.create(self.family, **self.config)
        if isinstance(model, Classical):
            return self._fit_classical(model, clips, seed=seed, label=label, started=started)
        if self.fixed_epochs:  # full-train: every clip trains, for a fixed number of epochs
            fit, held = clips, []
        else:
            fit, held = holdout_split(clips, share=self.recipe.holdout, seed=seed)
        if self.pretrained is not None:
            model.use_pretrained(self.pretrained[0])
        # Generators: clips are read from the cache as needed, not all held raw in memory.
        inputs = inputs_for(model).fit(self.arrays.get(c.id) for c in fit)
        train_set = (*inputs.tensors((self.arrays.get(c.id) for c in fit), train=True),
                     torch.tensor([c.label for c in fit]))
        held_set = (*inputs.tensors(self.arrays.get(c.id) for c in held),
                    torch.tensor([c.label for c in held])) if held else None
        task = self.display.task(label, total=self.fixed_epochs or self.recipe.epochs,
                                 unit="epochs", every=EPOCHS_PER_LINE)
        history, best = fit_model(model, inputs, train_set, held_set, recipe=self.recipe,
                                  seed=seed, device=self.device, fixed_epochs=self.fixed_epochs,
                                  on_epoch=lambda epoch, row: self._report(task, epoch, row))
        epochs = len(history["train_loss"])
        task.finish(completed=epochs, total=epochs, status=(
            f"{epochs} epochs on every clip (full-train, no hold-out)" if held_set is None else
            f"best epoch {best['epoch']}: hold-out loss {best['loss']:.3f} "
            f"acc {best['accuracy']:.2f}"))
        model.eval()
        return FitResult(model, inputs, history, best["epoch"], best["loss"], best["accuracy"],
                         len(fit), len(held), time.perf_counter() - started)

    def _fit_classical(self, model, clips, *, seed, label, started):
        """A grid search over grouped folds of ``clips``, then a fit on them all: no hold-out."""
        task = self.display.task(label, total=1, unit="fits")
        inputs = inputs_for(model).fit(self.arrays.get(c.id) for c in clips)
        (x,) = inputs.tensors(self.arrays.get(c.id) for c in clips)
        y = np.array([c.label for c in clips])
        weights = class_weights(y, self.recipe.class_weight)
        search = model.fit(x.double().numpy(), y, groups=[c.group for c in clips],
                           sample_weight=None if weights is None else weights[y], seed=seed)
        task.finish(completed=1, total=1, status=f"grouped CV {search['scoring']} "
                                                 f"{search['score']:.2f} with {search['params']}")
        no_epochs = {"train_loss": [], "train_acc": [], "holdout_loss": [], "holdout_acc": [],
                     "lr": []}
        return FitResult(model.eval(), inputs, no_epochs, 0, None, None, len(clips), 0,
                         time.perf_counter() - started, search)

    def score(self, result, ids, *, oof):
        """``{id: Score}`` of ``result``'s model on ``ids``."""
        probs, embeddings = predict_arrays(result.model, result.inputs, self.arrays, ids,
                                           device=self.device, batch_size=self.recipe.batch_size)
        return {clip_id: Score(probs[i], embeddings[i], oof) for i, clip_id in enumerate(ids)}

    @staticmethod
    def _report(task, epoch, row):
        if "holdout_loss" not in row:  # full-train
            task.update(completed=epoch, status=f"loss {row['train_loss']:.3f} "
                                                f"acc {row['train_acc']:.2f} (train)")
            return
        task.update(completed=epoch, status=(
            f"loss {row['train_loss']:.3f}/{row['holdout_loss']:.3f} "
            f"acc {row['train_acc']:.2f}/{row['holdout_acc']:.2f} (train/hold-out)"))
