"""Weighted soft voting with weights fitted on the train out-of-fold scores.

The weights are searched on a grid over the simplex (non-negative, summing to
one, in steps of ``step``): the winner has the highest accuracy of the
weighted average on the training rows; among equally accurate weightings the
lowest log-loss wins (the better calibrated mix), then the first in
enumeration order. The grid is coarsened when there are so many models that
it would exceed ``max_points`` weightings.
"""

import itertools
from math import comb

import numpy as np

from gemo.fusion.base import ProbabilityFuser, register

_CHUNK = 1024  # weightings evaluated at once, to bound memory


@register
class WeightedFuser(ProbabilityFuser):
    """Weighted average of the models' probabilities; ``weights_`` sum to one.

    >>> import numpy as np
    >>> good, noise = np.eye(3)[[0, 1, 2, 0]], np.eye(3)[[2, 0, 1, 1]]
    >>> WeightedFuser().fit(np.hstack([good, noise]), [0, 1, 2, 0]).weights_[0] > 0.5
    np.True_
    """

    name = "weighted"
    description = "weighted average of probabilities, weights searched on the simplex"

    def __init__(self, step=0.1, max_points=20000):
        self.step = step
        self.max_points = max_points

    def _fit(self, X, y, groups):
        per_model = self._per_model(X)
        n_models = per_model.shape[1]
        parts = max(1, round(1 / self.step))
        while parts > 1 and comb(parts + n_models - 1, n_models - 1) > self.max_points:
            parts -= 1
        grid = _simplex(n_models, parts)
        best = None
        rows = np.arange(len(y))
        for start in range(0, len(grid), _CHUNK):
            weights = grid[start : start + _CHUNK]
            mixed = np.einsum("pm,nmc->pnc", weights, per_model)
            accuracy = (mixed.argmax(axis=2) == y).mean(axis=1)
            log_loss = -np.log(np.clip(mixed[:, rows, y], 1e-12, None)).mean(axis=1)
            # Sort by accuracy (high first) then log-loss (low first); stable keeps grid order.
            order = np.lexsort((log_loss, -accuracy))
            top = order[0]
            key = (-accuracy[top], log_loss[top])
            if best is None or key < best[0]:
                best = (key, weights[top])
        self.weights_ = best[1]
        self.train_accuracy_ = float(-best[0][0])
        self.n_models_ = n_models

    def _proba(self, X):
        per_model = self._per_model(X)
        if per_model.shape[1] != len(self.weights_):
            raise ValueError(f"fitted on {len(self.weights_)} models, got {per_model.shape[1]}")
        return np.einsum("m,nmc->nc", self.weights_, per_model)


def _simplex(n_models, parts):
    """All weight vectors with entries ``k / parts`` summing to one.

    Stars and bars: ``n_models - 1`` bars among ``parts + n_models - 1`` slots;
    the gaps between bars are the counts.
    """
    slots = parts + n_models - 1
    points = [
        np.diff([-1, *bars, slots]) - 1 for bars in itertools.combinations(range(slots), n_models - 1)
    ]
    return np.array(points, dtype=float) / parts
