"""Which clips train which model: cross-fitting folds and the early-stopping hold-out.

Both are grouped by source video (``Clip.group``) and stratified by label, through
the one grouped k-fold helper fusion uses too (:func:`gemo.folds.grouped_folds`).
"""

import numpy as np

from gemo.errors import GemoError
from gemo.folds import grouped_folds


def assign_folds(clips, *, folds, seed):
    """``{clip id: fold}``, stratified by label; a source video (``Clip.group``) in one fold."""
    groups = len({c.group for c in clips})
    largest = max(np.bincount([c.label for c in clips]))
    if folds > min(groups, largest):
        raise GemoError(f"cross-fitting with {folds} folds needs at least {folds} source videos "
                        f"and {folds} clips of some class in the train split, found {groups} "
                        f"videos and at most {largest} clips a class: use fewer folds (or folds=0)")
    return _group_split(clips, folds, seed)


def holdout_split(clips, *, share, seed):
    """``(fit, holdout)`` clip lists: about ``share`` of the source videos held out."""
    groups = len({c.group for c in clips})
    largest = max(np.bincount([c.label for c in clips]))
    # One part of round(1/share) equal parts; fewer parts (a larger share) on tiny data.
    parts = min(groups, largest, max(2, round(1 / share)))
    if parts < 2:
        raise GemoError("early stopping needs at least two source videos and two clips of a "
                        f"class among the training clips, found {groups} and {largest}")
    fold_of = _group_split(clips, parts, seed)
    held = [c for c in clips if fold_of[c.id] == 0]
    if not held:
        raise GemoError("could not hold out any clips for early stopping")
    return [c for c in clips if fold_of[c.id] != 0], held


def _group_split(clips, parts, seed):
    """``{clip id: fold}`` over ``parts`` folds of :func:`gemo.folds.grouped_folds`."""
    folds = grouped_folds([c.label for c in clips], [c.group for c in clips], n_splits=parts,
                          seed=seed)
    return {clips[row].id: fold for fold, (_, held) in enumerate(folds) for row in held}
