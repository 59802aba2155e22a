"""The loop: Adam + cross-entropy with early stopping, scoring, and seeded, deterministic torch.

Every model gemo trains, fold or final, goes through :func:`fit_model`; it sees
tensors only (what :mod:`gemo.models.inputs` makes of the cache's arrays).
"""

import copy
import random
from contextlib import contextmanager

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from gemo import threads
from gemo.labels import N_CLASSES


def class_weights(labels, mode):
    """Per-class weights ``[N_CLASSES]`` for ``mode`` (a ``Recipe.class_weight``), None for "none".

    "balanced" is scikit-learn's ``n_samples / (n_classes * count)`` over the classes present in
    ``labels`` (the clips one model is fitted on); a class absent from them weighs 0.

    >>> class_weights([0, 0, 0, 1], "balanced").tolist()
    [0.6666666666666666, 2.0, 0.0]
    """
    if mode == "none":
        return None
    counts = np.bincount(np.asarray(labels), minlength=N_CLASSES)
    present = counts > 0
    weights = np.zeros(N_CLASSES)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights


def fit_model(model, inputs, train_set, holdout_set, *, recipe, seed, device="cpu", on_epoch=None):
    """The loop: Adam + cross-entropy, early stopping on hold-out loss, best weights kept.

    ``train_set`` / ``holdout_set`` are tuples of tensors, labels last. Returns
    ``(history, best)``; ``model`` ends with the best epoch's weights. With
    ``recipe.class_weight`` "balanced" the loss weighs classes by :func:`class_weights` of
    ``train_set``'s labels, the hold-out loss too, so that early stopping watches what is
    optimised.
    """
    model.to(device)
    weight = class_weights(train_set[-1].numpy(), recipe.class_weight)
    weight = None if weight is None else torch.tensor(weight, dtype=torch.float32, device=device)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=recipe.lr)
    shuffle = torch.Generator().manual_seed(seed)
    augment = torch.Generator().manual_seed(seed + 7919)  # separate stream: same order either way
    loader = DataLoader(TensorDataset(*train_set), batch_size=recipe.batch_size, shuffle=True,
                        generator=shuffle, num_workers=0)
    history = {"train_loss": [], "train_acc": [], "holdout_loss": [], "holdout_acc": []}
    best = {"epoch": 0, "loss": float("inf"), "accuracy": 0.0}
    best_state, waited = None, 0
    for epoch in range(1, recipe.epochs + 1):
        model.train()
        total, correct, count = 0.0, 0, 0
        for *tensors, labels in loader:
            batch = [t.to(device) for t in inputs.batch(tensors, train=True, generator=augment)]
            labels = labels.to(device)
            logits = model(*batch)
            loss = F.cross_entropy(logits, labels, weight=weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(labels)
            correct += int((logits.argmax(1) == labels).sum())
            count += len(labels)
        held_loss, held_acc = evaluate(model, inputs, holdout_set, device=device,
                                       batch_size=recipe.batch_size, weight=weight)
        row = {"train_loss": total / count, "train_acc": correct / count,
               "holdout_loss": held_loss, "holdout_acc": held_acc}
        for key, value in row.items():
            history[key].append(round(value, 6))
        if held_loss < best["loss"]:
            best = {"epoch": epoch, "loss": held_loss, "accuracy": held_acc}
            best_state = copy.deepcopy(model.state_dict())
            waited = 0
        else:
            waited += 1
        if on_epoch is not None:
            on_epoch(epoch, row)
        if waited >= recipe.patience:
            break
    model.load_state_dict(best_state)
    return history, best


@torch.no_grad()
def evaluate(model, inputs, dataset, *, device="cpu", batch_size=64, weight=None):
    """``(mean cross-entropy, accuracy)`` of ``model`` on a tuple of tensors, labels last;
    with ``weight`` (per class) the loss is the weighted mean, as ``F.cross_entropy``'s."""
    model.eval()
    *tensors, labels = dataset
    total, correct = 0.0, 0
    count = float(len(labels) if weight is None else weight.cpu()[labels].sum())
    for start in range(0, len(labels), batch_size):
        part = [t[start : start + batch_size] for t in tensors]
        batch = [t.to(device) for t in inputs.batch(part)]
        y = labels[start : start + batch_size].to(device)
        logits = model(*batch)
        total += float(F.cross_entropy(logits, y, weight=weight, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
    return total / count, correct / len(labels)


@torch.no_grad()
def predict_arrays(model, inputs, arrays, ids, *, device="cpu", batch_size=64):
    """``(probs [N, 3], embeddings [N, D])`` as float32 numpy, in ``ids`` order.

    Non-finite feature values are zero-filled after standardisation (Pinto 2020).
    """
    model.eval().to(device)
    probs, embeddings = [], []
    for start in range(0, len(ids), batch_size):
        chunk = ids[start : start + batch_size]
        batch = [t.to(device) for t in inputs.batch(inputs.tensors(arrays.get(i) for i in chunk))]
        embedding = model.embed(*batch)
        probs.append(torch.softmax(model.head(embedding), dim=1).float().cpu())
        embeddings.append(embedding.float().cpu())
    if not probs:
        return np.zeros((0, N_CLASSES), np.float32), np.zeros((0, 0), np.float32)
    return torch.cat(probs).numpy(), torch.cat(embeddings).numpy()


def _seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextmanager
def _deterministic(seed):
    """Deterministic kernels where torch has them, :func:`gemo.threads.count` CPU threads
    (1 unless ``$GEMO_THREADS`` says); the global settings are restored after."""
    before = (torch.are_deterministic_algorithms_enabled(),
              torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    _seed_everything(seed)
    try:
        with threads.limited():
            yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = before[2:4]
