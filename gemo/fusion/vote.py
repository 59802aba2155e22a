"""Hard majority voting (Fusical's baseline), ties broken by summed probability."""

import numpy as np

from gemo.fusion.base import ProbabilityFuser, register
from gemo.labels import N_CLASSES

# Half a vote spread by the mean probability: never outweighs a whole vote,
# so it only decides between classes with equal vote counts.
_TIE_BREAK = 0.5


@register
class VoteFuser(ProbabilityFuser):
    """Each model votes for its most probable class; the most voted class wins.

    ``predict_proba`` is ``(votes + 0.5 * mean probability) / (n_models + 0.5)``:
    the vote share, nudged so that its argmax is the majority class and, on a
    tie, the tied class with the highest summed probability.

    >>> import numpy as np
    >>> X = [[0.6, 0.4, 0, 0.1, 0.9, 0, 0.0, 0.45, 0.55]]   # votes: Positive, Neutral, Negative
    >>> VoteFuser().fit(np.zeros((3, 9)), [0, 1, 2]).predict(X)   # Neutral has most probability
    array([1])
    """

    name = "vote"
    description = "hard majority voting, ties broken by summed probability"

    def _fit(self, X, y, groups):
        self.n_models_ = self._per_model(X).shape[1]

    def _proba(self, X):
        per_model = self._per_model(X)
        n_models = per_model.shape[1]
        choices = per_model.argmax(axis=2)
        votes = np.stack([(choices == c).sum(axis=1) for c in range(N_CLASSES)], axis=1)
        return (votes + _TIE_BREAK * per_model.mean(axis=1)) / (n_models + _TIE_BREAK)
