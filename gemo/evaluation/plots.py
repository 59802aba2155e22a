"""Confusion-matrix and embedding-map images."""

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


# Fewer clips than this make no map worth drawing (and t-SNE needs perplexity < clips).
MIN_EMBEDDING_CLIPS = 10
CLASS_COLOURS = ("tab:green", "tab:gray", "tab:red")  # Positive, Neutral, Negative


def embedding_map(x, *, seed=0):
    """2-D t-SNE (scikit-learn, PCA start, seeded) of the rows of ``x``; perplexity 30, or
    less for few rows (it must stay below their number)."""
    from sklearn.manifold import TSNE

    x = np.asarray(x, dtype=np.float64)
    perplexity = min(30.0, max(2.0, (len(x) - 1) / 3))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed,
                n_jobs=1).fit_transform(x)


def save_embedding_png(path, x, truth, predicted, *, title=""):
    """Write the t-SNE map of the rows of ``x`` as a PNG: coloured by true class, a dot where
    ``predicted`` is right and a cross where it is wrong."""
    points = embedding_map(x)
    truth, right = np.asarray(truth), np.asarray(predicted) == np.asarray(truth)
    figure = Figure(figsize=(5.5, 4.5), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for label, (name, colour) in enumerate(zip(CLASSES, CLASS_COLOURS, strict=True)):
        for hit, marker in ((True, "o"), (False, "x")):
            rows = (truth == label) & (right == hit)
            if rows.any():
                axes.scatter(points[rows, 0], points[rows, 1], c=colour, marker=marker, s=18,
                             label=f"{name}{'' if hit else ' (wrong)'}", alpha=0.8)
    axes.set_xticks([])
    axes.set_yticks([])
    axes.legend(fontsize=7, loc="best")
    axes.set_title(title, fontsize=9)
    figure.savefig(path, bbox_inches="tight")
    return path
