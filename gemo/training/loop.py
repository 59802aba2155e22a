"""The loop: the recipe's optimizer + cross-entropy with early stopping, scoring, and seeded,
deterministic torch.

Every model gemo trains, fold or final, goes through :func:`fit_model`; it sees
tensors only (what :mod:`gemo.models.inputs` makes of the cache's arrays).
"""

import copy
import random
from contextlib import contextmanager, nullcontext

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


def fit_model(model, inputs, train_set, holdout_set, *, recipe, seed, device="cpu",
              on_epoch=None, fixed_epochs=None):
    """The loop: the recipe's optimizer + cross-entropy, early stopping on hold-out loss, best
    weights kept.

    ``train_set`` / ``holdout_set`` are tuples of tensors, labels last. Returns
    ``(history, best)``; ``model`` ends with the best epoch's weights. With
    ``recipe.class_weight`` "balanced" the loss weighs classes by :func:`class_weights` of
    ``train_set``'s labels, and with ``recipe.label_smoothing`` smooths the targets, the
    hold-out loss too, so that early stopping watches what is optimised.
    A family with a loss of its own (:meth:`gemo.models.base.Model.loss`: face-level terms, a
    flow's likelihood) trains on it; early stopping still watches the cross-entropy of its
    clip scores, which are what it is used for.
    ``holdout_set`` None (full-train): exactly ``fixed_epochs`` epochs, no early stopping, the last
    weights kept (``best`` then has no loss nor accuracy). The schedule runs over
    ``recipe.epochs`` either way, so a full-train run follows the learning rates of the run
    whose best epoch it copies.
    """
    model.to(device)
    weight = class_weights(train_set[-1].numpy(), recipe.class_weight)
    weight = None if weight is None else torch.tensor(weight, dtype=torch.float32, device=device)
    optimizer = make_optimizer(model, recipe)
    # A gemo Model may train on a loss of its own (Model.loss); any other module on cross-entropy.
    criterion = getattr(model, "loss", F.cross_entropy)
    autocast_dtype = amp_dtype(device) if recipe.amp else None
    # fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none.
    scaler = torch.amp.GradScaler(torch.device(device).type,
                                  enabled=autocast_dtype == torch.float16)
    shuffle = torch.Generator().manual_seed(seed)
    augment = torch.Generator().manual_seed(seed + 7919)  # separate stream: same order either way
    loader = DataLoader(TensorDataset(*train_set), batch_size=recipe.batch_size, shuffle=True,
                        generator=shuffle, num_workers=0)
    history = {"train_loss": [], "train_acc": [], "holdout_loss": [], "holdout_acc": [], "lr": []}
    best = {"epoch": 0, "loss": float("inf"), "accuracy": 0.0}
    best_state, waited = None, 0
    full = holdout_set is None
    for epoch in range(1, (fixed_epochs if full else recipe.epochs) + 1):
        factor = recipe.lr_factor(epoch)
        for group in optimizer.param_groups:
            group["lr"] = recipe.lr * group["lr_scale"] * factor
        model.train()
        total, correct, count = 0.0, 0, 0
        for *tensors, labels in loader:
            batch = [t.to(device) for t in inputs.batch(tensors, train=True, generator=augment)]
            labels = labels.to(device)
            with _autocast(device, autocast_dtype):
                logits = model(*batch)
            loss = criterion(logits.float(), labels, weight=weight,
                             label_smoothing=recipe.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            total += float(loss.detach()) * len(labels)
            correct += int((logits.argmax(1) == labels).sum())
            count += len(labels)
        row = {"train_loss": total / count, "train_acc": correct / count}
        if not full:
            row["holdout_loss"], row["holdout_acc"] = evaluate(
                model, inputs, holdout_set, device=device, batch_size=recipe.batch_size,
                weight=weight, label_smoothing=recipe.label_smoothing)
        for key, value in row.items():
            history[key].append(round(value, 6))
        history["lr"].append(optimizer.param_groups[0]["lr"])
        if on_epoch is not None:
            on_epoch(epoch, row)
        if full:
            continue
        if row["holdout_loss"] < best["loss"]:
            best = {"epoch": epoch, "loss": row["holdout_loss"], "accuracy": row["holdout_acc"]}
            best_state = copy.deepcopy(model.state_dict())
            waited = 0
        else:
            waited += 1
        if waited >= recipe.patience:
            break
    if full:
        return history, {"epoch": fixed_epochs, "loss": None, "accuracy": None}
    model.load_state_dict(best_state)
    return history, best


def make_optimizer(model, recipe):
    """``recipe.optimizer`` over the trainable parameters; with ``recipe.backbone_lr_scale``
    the parameters of ``model.backbone`` form a group of their own whose learning rate is
    scaled (each group's ``lr_scale``; the loop sets ``lr`` every epoch)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    parts = [(trainable, 1.0)]
    backbone = getattr(model, "backbone", None)
    if recipe.backbone_lr_scale != 1 and isinstance(backbone, torch.nn.Module):
        inside = {id(p) for p in backbone.parameters()}
        parts = [([p for p in trainable if id(p) not in inside], 1.0),
                 ([p for p in trainable if id(p) in inside], recipe.backbone_lr_scale)]
    groups = [{"params": params, "lr": recipe.lr * scale, "lr_scale": scale}
              for params, scale in parts if params]
    common = {"lr": recipe.lr, "weight_decay": recipe.weight_decay}
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, momentum=recipe.momentum, nesterov=recipe.nesterov,
                               **common)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(groups, **common)
    return torch.optim.Adam(groups, **common)


def amp_dtype(device):
    """The autocast type of ``--amp`` on ``device`` (a CUDA device): bfloat16 on a GPU that
    computes in it (compute capability 8.0 and later; fp32's range, so no loss scaling), else
    float16, with a ``GradScaler``."""
    capable = torch.cuda.get_device_capability(torch.device(device)) >= (8, 0)
    return torch.bfloat16 if capable else torch.float16


def _autocast(device, dtype):
    """Mixed precision for the forward pass when ``dtype`` is set, else nothing."""
    if dtype is None:
        return nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


@torch.no_grad()
def evaluate(model, inputs, dataset, *, device="cpu", batch_size=64, weight=None,
             label_smoothing=0.0):
    """``(mean cross-entropy, accuracy)`` of ``model`` on a tuple of tensors, labels last;
    with ``weight`` (per class) the loss is the weighted mean, as ``F.cross_entropy``'s, and
    with ``label_smoothing`` the targets are smoothed, as in training."""
    model.eval()
    *tensors, labels = dataset
    total, correct = 0.0, 0
    count = float(len(labels) if weight is None else weight.cpu()[labels].sum())
    for start in range(0, len(labels), batch_size):
        part = [t[start : start + batch_size] for t in tensors]
        batch = [t.to(device) for t in inputs.batch(part)]
        y = labels[start : start + batch_size].to(device)
        logits = model(*batch)
        total += float(F.cross_entropy(logits, y, weight=weight, reduction="sum",
                                       label_smoothing=label_smoothing))
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
