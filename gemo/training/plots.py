"""Loss and accuracy curves of a training run (``curves.png`` beside the checkpoint)."""

import numpy as np


def plot_curves(path, history, *, title):
    """Loss and accuracy per epoch (train and hold-out) of the final model; fold hold-out
    losses in grey. A full-train run has no hold-out: train curves only."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    final = history["final"]
    epochs = np.arange(1, len(final["train_loss"]) + 1)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for number, fold in enumerate(history["folds"]):
        curve = fold["holdout_loss_curve"]
        left.plot(np.arange(1, len(curve) + 1), curve, color="0.8", lw=0.8,
                  label="fold models, hold-out" if number == 0 else None)
    left.plot(epochs, final["train_loss"], label="train")
    right.plot(epochs, final["train_acc"], label="train")
    if final["holdout_loss"]:
        left.plot(epochs, final["holdout_loss"], label="hold-out")
        right.plot(epochs, final["holdout_acc"], label="hold-out")
    for axis, what in ((left, "cross-entropy"), (right, "accuracy")):
        axis.axvline(final["best_epoch"], color="k", ls=":", lw=1, label="best epoch")
        axis.set_xlabel("epoch")
        axis.set_ylabel(what)
        axis.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
