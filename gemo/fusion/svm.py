"""SVM score-level fusion with a grid search (Pinto et al. 2020).

An SVM on the concatenated class probabilities of the models. C, the
kernel (linear, rbf, poly) and the polynomial degree are chosen by a grid
search scored by accuracy over folds grouped by source video; the chosen SVM
is then calibrated into probabilities by Platt scaling (sigmoid) fitted on
out-of-fold decision values over the same folds.

``SVC(probability=True)`` did the same internally but is deprecated since
scikit-learn 1.9, whose replacement is ``CalibratedClassifierCV(SVC(),
ensemble=False)``, used here with the grouped folds.
"""

import itertools

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.model_selection import GridSearchCV
from sklearn.svm import SVC

from gemo.folds import grouped_folds
from gemo.fusion.base import ProbabilityFuser, full_proba, register


@register
class SVMFuser(ProbabilityFuser):
    """Grid-searched, calibrated SVM over concatenated class probabilities.

    ``C``, ``kernel`` and ``degree`` are the grids searched (``degree`` only
    applies to ``poly``); ``coef0=1`` lets polynomial kernels keep their
    lower-order terms. After ``fit``: ``best_params_``, ``best_score_`` (mean
    grouped-CV accuracy, NaN when the grid has a single point), ``cv_results_``
    and the calibrated ``estimator_``.

    >>> SVMFuser(C=(1.0,), kernel=("rbf",)).get_params()["kernel"]
    ('rbf',)
    """

    name = "svm"
    description = "grid-searched SVM on the concatenated class probabilities (Pinto 2020)"

    def __init__(
        self,
        C=(0.1, 1.0, 10.0, 100.0),
        kernel=("linear", "rbf", "poly"),
        degree=(2, 3),
        coef0=1.0,
        cv=5,
        seed=0,
        n_jobs=None,
    ):
        self.C = C
        self.kernel = kernel
        self.degree = degree
        self.coef0 = coef0
        self.cv = cv
        self.seed = seed
        self.n_jobs = n_jobs

    def candidates(self):
        """Every SVC parameter set of the grid, in a fixed order."""
        out = []
        for kernel in _as_tuple(self.kernel):
            degrees = _as_tuple(self.degree) if kernel == "poly" else (None,)
            for degree, c in itertools.product(degrees, _as_tuple(self.C)):
                params = {"kernel": kernel, "C": float(c)}
                if degree is not None:
                    params["degree"] = int(degree)
                out.append(params)
        if not out:
            raise ValueError("svm fusion: the grid is empty")
        return out

    def _fit(self, X, y, groups):
        folds = grouped_folds(y, groups, n_splits=self.cv, seed=self.seed, every_class=True)
        candidates = self.candidates()
        if len(candidates) == 1:
            self.best_params_ = candidates[0]
            self.best_score_ = float("nan")
            self.cv_results_ = []
        else:
            search = GridSearchCV(
                SVC(coef0=self.coef0),
                [{key: [value] for key, value in params.items()} for params in candidates],
                scoring="accuracy",
                cv=folds,
                refit=False,
                n_jobs=self.n_jobs,
                error_score="raise",
            )
            search.fit(X, y)
            self.best_params_ = dict(search.best_params_)
            self.best_score_ = float(search.best_score_)
            self.cv_results_ = [
                {"params": params, "accuracy": float(score)}
                for params, score in zip(
                    search.cv_results_["params"], search.cv_results_["mean_test_score"]
                )
            ]
        model = CalibratedClassifierCV(
            SVC(coef0=self.coef0, **self.best_params_), method="sigmoid", cv=folds, ensemble=False
        )
        self.estimator_ = model.fit(X, y)

    def _proba(self, X):
        return full_proba(self.estimator_, self.estimator_.predict_proba(X))

    def selected(self):
        fixed = super().selected()
        best = self.best_params_
        return fixed.set_params(
            C=(best["C"],), kernel=(best["kernel"],), degree=(best.get("degree", 3),)
        )


def _as_tuple(value):
    if isinstance(value, (str, int, float, np.integer, np.floating)):
        return (value,)
    return tuple(value)
