"""Metrics and reports of the models' and fusions' scores.

>>> from gemo.evaluation import summarize
>>> summarize([0, 1, 2], [0, 1, 1])["accuracy"]
0.6666666666666666
"""

from gemo.evaluation.api import evaluate
from gemo.evaluation.groups import load_group_sizes
from gemo.evaluation.metrics import accuracy, confusion_matrix, summarize

__all__ = ["accuracy", "confusion_matrix", "evaluate", "load_group_sizes", "summarize"]
