"""Cross-validation folds that keep every source video in one fold: one helper for training
(cross-fitting, the early-stopping hold-out) and fusion (cross-fitting, the SVM's grid search)."""

import warnings

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from gemo.errors import GemoError


def grouped_folds(y, groups=None, *, n_splits=5, seed=0, every_class=False):
    """``[(train_rows, test_rows), ...]`` stratified by class and grouped by source video.

    Clips cut from one video look alike; letting them straddle folds would
    make cross-validation scores optimistic. Without ``groups`` every row is
    its own group. Fewer groups than ``n_splits`` give fewer folds. With
    ``every_class`` (for scikit-learn classifiers, which cannot be fitted on a
    part that misses a class) the folds are as many as keep every class in
    every training part.

    >>> folds = grouped_folds([0, 1, 2] * 4, ["a", "a", "b", "b", "c", "c"] * 2, n_splits=3)
    >>> len(folds)
    3
    """
    y = np.asarray(y)
    groups = np.arange(len(y)) if groups is None else np.asarray(groups)
    classes, counts = np.unique(y, return_counts=True)
    # StratifiedGroupKFold refuses more folds than the largest class has clips.
    k = min(n_splits, len(np.unique(groups)), int(counts.max()))
    if k < 2:
        raise ValueError(f"cross-validation needs at least 2 source videos, got {k}")
    for n in range(k, 1, -1):
        splitter = StratifiedGroupKFold(n_splits=n, shuffle=True, random_state=seed)
        with warnings.catch_warnings():
            # Small classes trigger "least populated class" warnings; the folds are still valid.
            warnings.simplefilter("ignore", UserWarning)
            folds = list(splitter.split(np.zeros(len(y)), y, groups))
        if not every_class or all(len(np.unique(y[train])) == len(classes) for train, _ in folds):
            return folds
    raise GemoError("too few clips of each class in too few source videos for cross-validation: "
                    "every split leaves a class out of a training part; label more clips")
