"""Fully connected fusion (Fusical, Pinto-Gonzalez et al. 2020).

A small network (standardised inputs -> one ReLU layer -> softmax) over the
concatenated class probabilities, or over the concatenated penultimate-layer
embeddings (``fuse(inputs="embeddings")``, Fusical's early fusion).
"""

import warnings

from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from gemo.fusion.base import Fuser, full_proba, register


@register
class FCFuser(Fuser):
    """One hidden ReLU layer of ``hidden`` units with L2 penalty ``alpha``, trained by Adam.

    After ``fit``: ``estimator_`` (scaler + MLP) and ``converged_`` (False when
    ``max_iter`` was reached before the loss settled).
    """

    name = "fc"
    description = "fully connected network on probabilities or embeddings (Fusical)"
    inputs = ("probs", "embeddings")

    def __init__(self, hidden=32, alpha=1e-3, learning_rate=1e-3, max_iter=500, seed=0):
        self.hidden = hidden
        self.alpha = alpha
        self.learning_rate = learning_rate
        self.max_iter = max_iter
        self.seed = seed

    def _fit(self, X, y, groups):
        model = make_pipeline(
            StandardScaler(),
            MLPClassifier(
                hidden_layer_sizes=(int(self.hidden),),
                activation="relu",
                alpha=self.alpha,
                learning_rate_init=self.learning_rate,
                max_iter=int(self.max_iter),
                random_state=self.seed,
            ),
        )
        with warnings.catch_warnings(record=True) as caught:
            # Kept as an attribute instead of a warning per cross-fitting fold.
            warnings.simplefilter("always", ConvergenceWarning)
            model.fit(X, y)
        self.converged_ = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
        self.estimator_ = model

    def _proba(self, X):
        return full_proba(self.estimator_, self.estimator_.predict_proba(X))
