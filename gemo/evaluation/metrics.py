"""Classification metrics over the three classes, from a confusion matrix.

Conventions, for classes that are absent or never predicted:

* a class absent from ``y_true`` has no recall / per-class accuracy / F1
  (``None``) and is left out of the macro averages (UAR, macro-F1...), so a
  validation subset without, say, Negative clips is not penalised for it;
* a class present in ``y_true`` but never predicted has precision 0 (and F1 0):
  the model fails that class and the macro averages show it.

>>> m = summarize([0, 0, 1, 2], [0, 1, 1, 1])
>>> m["accuracy"], m["uar"], m["per_class"]["Negative"], m["precision"]["per_class"]["Negative"]
(0.5, 0.5, 0.0, 0.0)
"""

import numpy as np

from gemo.labels import CLASSES, N_CLASSES


def confusion_matrix(y_true, y_pred):
    """Counts ``[true, predicted]`` in CLASSES order (rows true, columns predicted).

    >>> confusion_matrix([0, 1, 1], [0, 0, 1]).tolist()
    [[1, 0, 0], [1, 1, 0], [0, 0, 0]]
    """
    y_true, y_pred = np.asarray(y_true, dtype=int), np.asarray(y_pred, dtype=int)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"{len(y_true)} labels but {len(y_pred)} predictions")
    matrix = np.zeros((N_CLASSES, N_CLASSES), dtype=int)
    np.add.at(matrix, (y_true, y_pred), 1)
    return matrix


def accuracy(y_true, y_pred):
    """Fraction of correct predictions (None when there are none)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return float((y_true == y_pred).mean()) if len(y_true) else None


def per_class_scores(matrix):
    """Precision, recall and F1 per class as three lists (None where undefined)."""
    matrix = np.asarray(matrix)
    true_counts, predicted_counts, hits = matrix.sum(axis=1), matrix.sum(axis=0), np.diag(matrix)
    precision, recall, f1 = [], [], []
    for c in range(N_CLASSES):
        p = hits[c] / predicted_counts[c] if predicted_counts[c] else (0.0 if true_counts[c] else None)
        r = hits[c] / true_counts[c] if true_counts[c] else None
        precision.append(None if p is None else float(p))
        recall.append(None if r is None else float(r))
        if r is None:
            f1.append(None)
        else:
            f1.append(float(2 * p * r / (p + r)) if p + r else 0.0)
    return precision, recall, f1


def macro(values, matrix):
    """Mean of ``values`` over the classes present in y_true (None if there are none)."""
    present = np.asarray(matrix).sum(axis=1) > 0
    kept = [v for v, keep in zip(values, present) if keep]
    return float(np.mean(kept)) if kept else None


def summarize(y_true, y_pred):
    """Every metric gemo reports, as a JSON-ready dict (see the module docstring).

    Keys: n, accuracy, uar (unweighted average recall = macro recall),
    per_class (accuracy of each class = its recall), confusion (rows true,
    columns predicted), and precision / recall / f1 each as
    ``{"macro": x, "per_class": {class: x}}``.
    """
    matrix = confusion_matrix(y_true, y_pred)
    precision, recall, f1 = per_class_scores(matrix)
    named = lambda values: dict(zip(CLASSES, values))  # noqa: E731
    return {
        "n": int(matrix.sum()),
        "accuracy": accuracy(y_true, y_pred),
        "uar": macro(recall, matrix),
        "per_class": named(recall),
        "confusion": matrix.tolist(),
        "precision": {"macro": macro(precision, matrix), "per_class": named(precision)},
        "recall": {"macro": macro(recall, matrix), "per_class": named(recall)},
        "f1": {"macro": macro(f1, matrix), "per_class": named(f1)},
    }
