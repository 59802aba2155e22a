"""``svm`` and ``logreg``: scikit-learn classifiers for one feature vector per clip (egemaps).

On a few thousand clips of functionals these are the baseline to beat (an RBF
SVM on eGeMAPS is the usual speech-emotion baseline). They are fitted by a grid
search, not by the training loop: :meth:`Classical.fit` chooses the grid point
by cross-validation over folds grouped by source video
(:func:`gemo.folds.grouped_folds`) within the clips it is given, then fits on
them all. Per-sample weights carry ``--class-weight``; under them the search
scores balanced accuracy (unweighted average recall) instead of accuracy.

The fitted estimator is kept as tensors (buffers), not pickled: checkpoints
load with ``weights_only=True``, and the prediction is computed here in torch
(float64) from those arrays, equal to scikit-learn's ``predict_proba`` to
rounding:

* ``svm``: ``SVC(kernel="rbf")`` calibrated by ``CalibratedClassifierCV(method=
  "sigmoid", ensemble=False)`` over the same grouped folds (as the SVM fusion;
  ``SVC(probability=True)`` is deprecated). Stored: support vectors, the dual
  coefficients of each pair of classes, intercepts, gamma, and each class's
  sigmoid slope and offset.
* ``logreg``: ``LogisticRegression`` (multinomial). Stored: coefficients, intercepts.

The embedding (what ``gemo fuse --method fc --inputs embeddings`` sees) is the
decision values, one per class: the SVM's one-vs-rest decision function (the
input of its calibration), the logistic regression's logits. A class absent
from the training clips gets decision 0 and probability 0.

>>> model = create("svm", input_dim=88)                        # doctest: +SKIP
>>> report = model.fit(x, y, groups=videos, sample_weight=None, seed=0)  # doctest: +SKIP
"""

import itertools
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from gemo import options
from gemo.errors import GemoError
from gemo.folds import grouped_folds
from gemo.models.base import Model, register


def _grid(text):
    """``"0.1,1,10"`` -> ``(0.1, 1.0, 10.0)``; ValueError unless positive numbers."""
    values = tuple(float(part) for part in text.split(","))
    if not all(value > 0 for value in values):
        raise ValueError(text)
    return values


class Classical(Model):
    """A scikit-learn classifier as a model family: :meth:`fit` instead of the training loop.

    Subclasses name their fitted arrays in ``fitted`` (buffers whose shapes the fit decides),
    implement :meth:`_fit` (search, fit, store) and :meth:`decision`, and set ``head``.
    """

    input_kind = "vector"
    fitted = ()
    grids = ("C",)  # options holding comma-separated grids

    def __init__(self, **config):
        super().__init__(**config)
        for name in self.fitted:
            self.register_buffer(name, torch.zeros(0, dtype=torch.float64))
        # The classes seen in training: the columns decision() fills.
        self.register_buffer("present", torch.zeros(self.num_classes, dtype=torch.bool))

    @property
    def embedding_dim(self):
        return self.num_classes

    def fit(self, x, y, *, groups, sample_weight, seed):
        """Grid search over grouped folds of ``x`` (standardised, float64), then fit on all;
        returns the search's report (chosen parameters, score, every candidate)."""
        classes = np.unique(y)
        folds = grouped_folds(y, groups, n_splits=self.options.cv, seed=seed, every_class=True)
        if any(len(np.unique(y[rows])) < len(classes) for rows, _ in folds):
            raise GemoError(f"model {self.name}: some class has too few source videos among "
                            f"{len(y)} training clips for a grouped {len(folds)}-fold grid "
                            "search: use fewer --folds, -o cv=2, or --model mlp")
        scoring = "accuracy" if sample_weight is None else "balanced_accuracy"
        from sklearn.model_selection import GridSearchCV

        estimator, grid, shown = self._candidates(x)
        search = GridSearchCV(estimator, grid, scoring=scoring, cv=folds, refit=False,
                              error_score="raise")
        with warnings.catch_warnings():
            # A small class can miss from a fold's test clips; its score is still valid.
            warnings.filterwarnings("ignore", "y_pred contains classes not in y_true")
            search.fit(x, y, sample_weight=sample_weight)
        self.present.zero_()
        self.present[torch.from_numpy(classes)] = True
        self._fit(x, y, search.best_params_, folds=folds, sample_weight=sample_weight)
        return {"params": shown(search.best_params_), "scoring": scoring,
                "score": float(search.best_score_), "cv_folds": len(folds),
                "candidates": [{"params": shown(params), "score": float(score)} for params, score
                               in zip(search.cv_results_["params"],
                                      search.cv_results_["mean_test_score"], strict=True)]}

    def _candidates(self, x):
        """``(estimator, param_grid, shown)``; ``shown`` turns a grid point into what the report
        states."""
        raise NotImplementedError

    def _fit(self, x, y, params, *, folds, sample_weight):
        raise NotImplementedError

    def _store(self, **arrays):
        for name, array in arrays.items():
            setattr(self, name, torch.as_tensor(np.asarray(array, np.float64)))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # The fitted arrays' shapes (e.g. the number of support vectors) come from the file.
        for name in self.fitted:
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def decision(self, x):
        """Decision values ``[batch, classes present]`` of float64 inputs."""
        raise NotImplementedError

    def embed(self, x):
        """``x``: ``[batch, features]``, standardised -> decision values ``[batch, num_classes]``
        (float64; 0 for a class absent from training)."""
        if not bool(self.present.any()):
            raise GemoError(f"model {self.name} is not fitted: train it with `gemo train`")
        out = torch.zeros(len(x), self.num_classes, dtype=torch.float64, device=x.device)
        out[:, self.present] = self.decision(x.double())
        return out

    def _only_present(self, logits):
        return logits.masked_fill(~self.present, float("-inf"))


@register
class SVM(Classical):
    name = "svm"
    description = ("RBF SVM with sigmoid-calibrated probabilities, grid-searched over C and gamma "
                   "(scikit-learn), for functionals")

    @dataclass(frozen=True)
    class Options(options.Options):
        C: str = "0.1,1,10,100"
        gamma: str = "0.25,1,4"  # multiples of sklearn's gamma="scale", 1 / (features * var)
        cv: int = 5  # grouped folds of the grid search and the calibration

        def check(self):
            return _check_grids(self, ("C", "gamma"))

    fitted = ("support", "dual", "intercept", "gamma", "slope", "offset")

    def _candidates(self, x):
        from sklearn.svm import SVC

        scale = 1.0 / (x.shape[1] * (x.var() or 1.0))
        factor = {scale * f: f for f in _grid(self.options.gamma)}
        return (SVC(kernel="rbf"),
                {"C": list(_grid(self.options.C)), "gamma": list(factor)},
                lambda p: {"C": p["C"], "gamma": factor[p["gamma"]],
                                   "gamma_value": float(p["gamma"])})

    def _fit(self, x, y, params, *, folds, sample_weight):
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.svm import SVC

        calibrated = CalibratedClassifierCV(SVC(kernel="rbf", **params), method="sigmoid",
                                            cv=folds, ensemble=False)
        calibrated.fit(x, y, sample_weight=sample_weight)
        pipeline = calibrated.calibrated_classifiers_[0]
        svc = pipeline.estimator
        a = np.array([c.a_ for c in pipeline.calibrators])
        b = np.array([c.b_ for c in pipeline.calibrators])
        if len(svc.classes_) == 2:
            # One decision d for the second class, p = sigmoid(-(a d + b)); the first class's
            # 1 - p is the same sigmoid of -d with offset -b, so both are one formula.
            a, b = np.repeat(a, 2), np.array([-b[0], b[0]])
        self._store(support=svc.support_vectors_, dual=_pair_coefficients(svc),
                    intercept=svc.intercept_, gamma=params["gamma"], slope=_spread(a, self.present),
                    offset=_spread(b, self.present))

    def decision(self, x):
        squared = ((x * x).sum(1, keepdim=True) + (self.support * self.support).sum(1)
                   - 2.0 * x @ self.support.T).clamp_min(0.0)
        pairs = torch.exp(-self.gamma * squared) @ self.dual.T + self.intercept
        classes = int(self.present.sum())
        if classes == 2:
            return torch.cat([-pairs, pairs], dim=1)  # scikit-learn's binary decision is pairs
        return _one_vs_rest(pairs, classes)

    def head(self, decision):
        """Log of each class's calibrated sigmoid; softmax divides them by their sum, as
        ``CalibratedClassifierCV`` does."""
        return self._only_present(F.logsigmoid(-(self.slope * decision + self.offset)))


@register
class LogReg(Classical):
    name = "logreg"
    description = "logistic regression grid-searched over C (scikit-learn), for functionals"

    @dataclass(frozen=True)
    class Options(options.Options):
        C: str = "0.01,0.1,1,10"
        cv: int = 5  # grouped folds of the grid search

        def check(self):
            return _check_grids(self, ("C",))

    fitted = ("weight", "bias")
    max_iter = 2000  # lbfgs on 88 standardised functionals: the default 100 may stop short

    def _candidates(self, x):
        from sklearn.linear_model import LogisticRegression

        return (LogisticRegression(max_iter=self.max_iter), {"C": list(_grid(self.options.C))},
                dict)

    def _fit(self, x, y, params, *, folds, sample_weight):
        from sklearn.linear_model import LogisticRegression

        fitted = LogisticRegression(max_iter=self.max_iter, **params).fit(
            x, y, sample_weight=sample_weight)
        weight, bias = fitted.coef_, fitted.intercept_
        if len(fitted.classes_) == 2:  # one row for the second class: softmax of (0, z)
            weight = np.vstack([np.zeros_like(weight), weight])
            bias = np.concatenate([[0.0], bias])
        self._store(weight=weight, bias=bias)

    def decision(self, x):
        return x @ self.weight.T + self.bias

    def head(self, decision):
        return self._only_present(decision)


def _check_grids(values, names):
    for name in names:
        try:
            _grid(getattr(values, name))
        except ValueError:
            return (f"{name}: {getattr(values, name)!r} is not a comma-separated list of "
                    "positive numbers")
    if values.cv < 2:
        return f"cv must be at least 2, got {values.cv}"
    return None


def _pair_coefficients(svc):
    """``[pairs, support vectors]``: pair (i, j)'s coefficient of each support vector, zero for
    those of other classes. scikit-learn packs them as libsvm does: a class-i vector's
    coefficient against class j is in row j - 1, a class-j vector's against class i in row i."""
    starts = np.concatenate([[0], np.cumsum(svc.n_support_)])
    pairs = list(itertools.combinations(range(len(svc.classes_)), 2))
    out = np.zeros((len(pairs), len(svc.support_vectors_)))
    for row, (i, j) in enumerate(pairs):
        own_i, own_j = slice(starts[i], starts[i + 1]), slice(starts[j], starts[j + 1])
        out[row, own_i] = svc.dual_coef_[j - 1, own_i]
        out[row, own_j] = svc.dual_coef_[i, own_j]
    return out


def _one_vs_rest(pairs, classes):
    """scikit-learn's one-vs-rest decision of an SVC from its pairwise ones: votes, plus the
    summed confidences squeezed into (-1/3, 1/3) to break ties (``_ovr_decision_function``)."""
    votes = pairs.new_zeros(len(pairs), classes)
    confidence = pairs.new_zeros(len(pairs), classes)
    for k, (i, j) in enumerate(itertools.combinations(range(classes), 2)):
        confidence[:, i] += pairs[:, k]
        confidence[:, j] -= pairs[:, k]
        votes[:, i] += (pairs[:, k] >= 0).double()
        votes[:, j] += (pairs[:, k] < 0).double()
    return votes + confidence / (3 * (confidence.abs() + 1))


def _spread(values, present):
    """Per-present-class ``values`` as a ``[num_classes]`` array, 0 for absent classes."""
    out = np.zeros(len(present))
    out[present.numpy()] = values
    return out
