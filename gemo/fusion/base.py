"""The fuser contract and the registry of fusion methods.

A fuser is a scikit-learn classifier over the per-clip outputs of several
models: ``X`` is the concatenation, model after model, of each model's three
class probabilities (``[N, 3 * n_models]``) or of its embeddings. Its classes
are always ``0, 1, 2`` (gemo.labels.CLASSES) and ``predict_proba`` always has
three columns, even when a cross-validation fold lacks a class.

>>> from gemo import fusion
>>> fusion.create("svm", seed=1).get_params()["seed"]
1
"""

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.utils.validation import check_is_fitted

try:
    from sklearn.utils.validation import validate_data
except ImportError:  # scikit-learn < 1.6

    def validate_data(estimator, *args, **kwargs):
        return estimator._validate_data(*args, **kwargs)


from gemo.errors import GemoError
from gemo.labels import N_CLASSES
from gemo.registry import Registry


class Fuser(ClassifierMixin, BaseEstimator):
    """Base class: subclasses set ``name``, ``inputs`` and implement ``_fit`` and ``_proba``.

    ``fit(X, y, groups=None)`` takes the source-video group of every row so
    that any internal cross-validation keeps a video's clips in one fold.
    """

    name = ""
    description = ""
    inputs = ("probs",)  # which score-table fields the method can fuse

    def fit(self, X, y, groups=None):
        X, y = validate_data(self, X, y, dtype=np.float64)
        y = np.asarray(y).astype(int)
        if y.min() < 0 or y.max() >= N_CLASSES:
            raise ValueError(f"labels must be class indices 0..{N_CLASSES - 1}")
        self.classes_ = np.arange(N_CLASSES)
        self._fit(X, y, None if groups is None else np.asarray(groups))
        return self

    def predict_proba(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return self._proba(X)

    def predict(self, X):
        proba = self.predict_proba(X)  # first, so an unfitted fuser raises NotFittedError
        return self.classes_[np.argmax(proba, axis=1)]

    def selected(self):
        """An unfitted copy fixed to the hyperparameters this fit chose (no new search).

        Used to cross-fit and to refit on train+val with the same settings.
        """
        check_is_fitted(self)
        return clone(self)

    def _fit(self, X, y, groups):
        raise NotImplementedError

    def _proba(self, X):
        raise NotImplementedError


class ProbabilityFuser(Fuser):
    """A fuser over concatenated class probabilities, seen as ``[N, n_models, 3]``."""

    def _per_model(self, X):
        if X.shape[1] % N_CLASSES:
            raise ValueError(
                f"{self.name}: expected {N_CLASSES} probabilities per model, got {X.shape[1]} columns"
            )
        return X.reshape(len(X), -1, N_CLASSES)


def full_proba(estimator, proba):
    """Spread ``proba`` (columns = ``estimator.classes_``) over all three classes."""
    out = np.zeros((len(proba), N_CLASSES))
    out[:, np.asarray(estimator.classes_, dtype=int)] = proba
    return out


_REGISTRY = Registry("fusion method")
register, available, get = _REGISTRY.register, _REGISTRY.available, _REGISTRY.get
registered = _REGISTRY.registered  # a class registered inside a with block (tests)


def create(name, **params):
    """A fuser instance; parameters it does not take (e.g. ``seed`` for ``mean``) are an error."""
    cls = get(name)
    known = cls().get_params()
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise GemoError(
            f"fusion {name}: unknown parameter(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(known)) or 'none'}"
        )
    return cls(**params)
