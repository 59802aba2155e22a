"""Confusion-matrix images."""

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from gemo.labels import CLASSES, N_CLASSES


def save_confusion_png(path, matrix, *, title=""):
    """Write ``matrix`` (rows true, columns predicted) as a PNG annotated with counts and row %.

    Uses a bare Agg figure, not pyplot, so no display or global state is involved.
    """
    matrix = np.asarray(matrix)
    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros(matrix.shape), where=rows > 0)
    figure = Figure(figsize=(5.0, 4.0), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    image = axes.imshow(share, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="share of true class")
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            axes.text(
                j, i, f"{matrix[i, j]}\n{share[i, j]:.0%}", ha="center", va="center",
                color="white" if share[i, j] > 0.5 else "black", fontsize=9,
            )
    axes.set_xticks(range(N_CLASSES), CLASSES)
    axes.set_yticks(range(N_CLASSES), CLASSES)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title, fontsize=10)
    figure.savefig(path, bbox_inches="tight")
    return path
