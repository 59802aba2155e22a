"""Soft voting: the average of the models' class probabilities (Fusical's baseline)."""

from gemo.fusion.base import ProbabilityFuser, register


@register
class MeanFuser(ProbabilityFuser):
    """Averages the models' probabilities; nothing is learned.

    >>> import numpy as np
    >>> fuser = MeanFuser().fit(np.array([[1, 0, 0, 0, 1, 0]] * 3), [0, 1, 2])
    >>> fuser.predict_proba([[0.6, 0.4, 0, 0, 0.2, 0.8]])
    array([[0.3, 0.3, 0.4]])
    """

    name = "mean"
    description = "soft voting: average of the class probabilities"

    def _fit(self, X, y, groups):
        self.n_models_ = self._per_model(X).shape[1]

    def _proba(self, X):
        return self._per_model(X).mean(axis=1)
