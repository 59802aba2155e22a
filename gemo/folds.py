"""Cross-validation folds that keep every source video in one fold: one helper for training
(cross-fitting, the early-stopping hold-out) and fusion (cross-fitting, the SVM's grid search)."""

import warnings

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold


def grouped_folds(y, groups=None, *, n_splits=5, seed=0):
    """``[(train_rows, test_rows), ...]`` stratified by class and grouped by source video.

    Clips cut from one video look alike; letting them straddle folds would
    make cross-validation scores optimistic. Without ``groups`` every row is
    its own group. Fewer groups than ``n_splits`` give fewer folds.

    >>> folds = grouped_folds([0, 1, 2] * 4, ["a", "a", "b", "b", "c", "c"] * 2, n_splits=3)
    >>> len(folds)
    3
    """
    y = np.asarray(y)
    groups = np.arange(len(y)) if groups is None else np.asarray(groups)
    k = min(n_splits, len(np.unique(groups)))
    if k < 2:
        raise ValueError(f"cross-validation needs at least 2 source videos, got {k}")
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        # Small classes trigger "least populated class" warnings; the folds are still valid.
        warnings.simplefilter("ignore", UserWarning)
        return [(train, test) for train, test in splitter.split(np.zeros(len(y)), y, groups)]
