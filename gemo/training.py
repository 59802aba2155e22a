"""One seeded training loop for every modality, with out-of-fold scores for the train split.

``train()`` reads a feature cache, trains the model family chosen for it and
writes, under the workspace::

    models/<modality>-<features>/model.pt      final model (self-describing checkpoint)
                                 config.json   everything needed to reproduce the run
                                 history.json  per-epoch loss/accuracy (final and fold models)
                                 curves.png    loss/accuracy curves
    scores/<modality>-<features>.h5            probabilities + embeddings of every cached clip

Recipe (Pinto 2020, section III-D): Adam, cross-entropy, at most ``epochs``
epochs, early stopping with ``patience`` on the loss of an inner hold-out, the
best epoch's weights kept. The inner hold-out is ~15% of the *train* split,
grouped by source video, so the official val split stays untouched for
evaluation. Train-split scores are cross-fitted (``folds`` models, each scoring
the source videos it never saw); val/test scores come from the final model
trained on the whole train split. See docs/training.md.

>>> summary = train(workspace=Workspace("gemo-work"), modality="audio",
...                 features="pyaudio")                                 # doctest: +SKIP
>>> table = predict(workspace=Workspace("gemo-work"), name="audio-pyaudio")  # doctest: +SKIP
"""

import copy
import json
import random
import time
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass

import numpy as np
import torch
from sklearn.model_selection import StratifiedGroupKFold
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

import gemo
from gemo import models, threads
from gemo.cache.store import FeatureCache
from gemo.device import resolve_device
from gemo.errors import GemoError
from gemo.labels import CLASSES
from gemo.models.checkpoint import build_checkpoint, load_model, save_checkpoint
from gemo.models.inputs import inputs_for, is_finite
from gemo.scores import ScoreTable, save_scores
from gemo.workspace import Workspace

MODALITIES = ("audio", "scene", "face")
HOLDOUT = 0.15  # share of the training clips (by source video) used for early stopping
SPLIT_ORDER = ("train", "val", "test")


@dataclass(frozen=True)
class Recipe:
    """The training hyper-parameters, the same for the final and every fold model."""

    epochs: int
    batch_size: int
    lr: float
    patience: int
    holdout: float = HOLDOUT


def train(*, workspace, modality, features, model=None, backbone=None, pretrained=False,
          weights=None, epochs=200, batch_size=None, lr=1e-3, patience=15, folds=5, seed=0,
          device="auto", progress=True, **model_options):
    """Train ``<modality>-<features>`` and write its model and scores; returns a summary dict.

    ``model`` picks the family (default by feature set: pyaudio/compare-lld ->
    blstm-attention, egemaps -> mlp, frames -> frame-cnn); ``backbone`` and any
    other keyword (``hidden=32``, ``input_size=64``...) are the family's options.
    ``pretrained=True`` loads ImageNet weights into the backbone (searched as
    :mod:`gemo.weights` says; ``weights``, a known name, folder or file, implies it).
    ``batch_size`` None takes the family's default (128 for audio, 16 for frames).
    ``folds`` < 2 turns cross-fitting off (train rows then are in-sample, oof=False).
    """
    started = time.perf_counter()
    workspace = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    if modality not in MODALITIES:
        raise GemoError(f"unknown modality {modality!r}; choose from {', '.join(MODALITIES)}")
    name = f"{modality}-{features}"
    _check_positive(epochs=epochs, lr=lr, patience=patience)
    device = resolve_device(device)
    index = _load_index(workspace)

    with FeatureCache(workspace.cache_path(features)) as cache:
        clips = _cached_clips(cache, index)
        if not clips:
            raise GemoError(f"the {features} cache has no clip of the indexed dataset: "
                            f"run `gemo extract` for {features} first")
        sample = _read(cache, clips[0].id, None)
        family = models.get(model or models.default_model(features, ndim=_main_ndim(sample)))
        options = dict(model_options)
        if backbone is not None:
            if "backbone" not in family.defaults:
                raise GemoError(f"model {family.name} has no backbone option")
            options["backbone"] = backbone
        if (pretrained or weights is not None) and not hasattr(family, "pretrained_state"):
            raise GemoError(f"model {family.name} has no pretrained weights")
        config = {"input_dim": _input_dim(family, sample, features), **options}
        probe = models.create(family.name, **config)  # fails now, before reading, on a bad option
        # Weights are found, verified and checked once, before any data is read.
        backbone_weights = probe.pretrained_state(weights=weights) if (
            pretrained or weights is not None) else None
        recipe = Recipe(epochs=int(epochs), lr=float(lr), patience=int(patience),
                        batch_size=int(batch_size or family.train_defaults.get("batch_size", 32)))
        _check_positive(batch_size=recipe.batch_size)
        feature_meta = {
            "set": features,
            "fingerprint": cache.fingerprint(),
            "extractor_version": cache.provenance["extractor_version"],
            "params": cache.params,
            "feature_names": list(cache.info.get("feature_names", [])),
        }
        arrays = _Arrays(cache, inputs_for(probe), features)  # the pipeline checks array shapes
        del probe

        labelled = [c for c in clips if c.split == "train" and c.label is not None]
        finite = {c.id for c in labelled if arrays.finite(c.id)}
        dropped = sorted(c.id for c in labelled if c.id not in finite)
        if len({c.label for c in labelled if c.id in finite}) < 2:
            raise GemoError(f"{name}: training needs labelled train clips of at least two classes "
                            f"with finite features ({len(finite)} usable)")
        fold_of = assign_folds(labelled, folds=folds, seed=seed) if folds >= 2 else {}

        runner = _Runner(family=family.name, config=config, recipe=recipe, arrays=arrays,
                         device=device, pretrained=backbone_weights, progress=progress)
        with runner.session(seed):
            scores, final, fold_histories = _cross_fit(runner, name=name, clips=clips,
                                                       labelled=labelled, usable=finite,
                                                       fold_of=fold_of, seed=seed)

    hyper = {**asdict(recipe), "folds": int(folds) if fold_of else 0, "seed": int(seed),
             "device": device, "threads": runner.threads, "model": family.name,
             "pretrained": backbone_weights is not None,
             "weights": None if weights is None else str(weights)}
    training = {
        **final.summary(),
        "n_train_clips": len(labelled),
        "n_used": len(finite),
        "dropped_nonfinite": dropped,
        "pretrained_source": None if backbone_weights is None else backbone_weights[1],
    }
    checkpoint = build_checkpoint(model=final.model, inputs=final.inputs, name=name,
                                  modality=modality, features=feature_meta, hyperparameters=hyper,
                                  training=training, seed=seed)
    out = workspace.model_dir(name)
    save_checkpoint(out / "model.pt", checkpoint)
    table = _score_table(name, clips, scores, attrs={
        "modality": modality, "features": features, "architecture": family.name,
        "fingerprint": feature_meta["fingerprint"], "folds": hyper["folds"],
        "train_rows": "out-of-fold (fold models)" if fold_of else "in-sample (final model)",
    })
    save_scores(workspace.scores_path(name), table)
    history = {"final": final.summary(with_curves=True), "folds": fold_histories}
    _write_json(out / "history.json", history)
    plot_curves(out / "curves.png", history, title=f"{name} ({family.name})")
    summary = {
        "name": name,
        "model": family.name,
        "model_dir": str(out),
        "checkpoint": str(out / "model.pt"),
        "scores": str(workspace.scores_path(name)),
        "device": device,
        "best_epoch": final.best_epoch,
        "epochs_run": len(final.history["train_loss"]),
        "holdout_loss": final.best_loss,
        "holdout_accuracy": final.best_accuracy,
        "oof_accuracy": _accuracy(table, clips, "train", oof_only=True),
        "val_accuracy": _accuracy(table, clips, "val"),
        "n_scored": len(table.ids),
        "n_dropped_nonfinite": len(dropped),
        "n_missing_from_cache": len(index.clips) - len(clips),
        "seconds": round(time.perf_counter() - started, 2),
    }
    _write_json(out / "config.json", {
        "name": name, "modality": modality, "features": feature_meta,
        "architecture": family.name, "config": final.model.config, "hyperparameters": hyper,
        "training": training, "folds": fold_of, "summary": summary,
        "gemo_version": gemo.__version__, "torch_version": torch.__version__,
    })
    return summary


def _cross_fit(runner, *, name, clips, labelled, usable, fold_of, seed):
    """Fold models score their held-out source videos (oof=True); the final model, trained
    on every usable labelled train clip, scores the rest (val, test, unlabelled train).

    Returns ``({clip id: (probs, embedding, oof)}, final result, fold summaries)``.
    """
    scores, histories = {}, []
    folds = sorted(set(fold_of.values()))
    for fold in folds:
        fit = [c for c in labelled if fold_of[c.id] != fold and c.id in usable]
        held = [c.id for c in labelled if fold_of[c.id] == fold]
        result = runner.fit(fit, seed=seed + 1 + fold, label=f"{name} fold {fold + 1}/{len(folds)}")
        histories.append(result.summary())
        scores.update(runner.score(result, held, oof=True))
    final = runner.fit([c for c in labelled if c.id in usable], seed=seed, label=f"{name} final")
    scores.update(runner.score(final, [c.id for c in clips if c.id not in scores], oof=False))
    return scores, final, histories


def predict(*, workspace, name, ids=None, device="auto", batch_size=None):
    """Scores of the trained model ``name`` on its feature cache, as a :class:`ScoreTable`.

    ``ids`` None scores every cached clip of the index. Refuses (GemoError
    naming the differences) a cache whose features differ from training time.
    All rows have ``oof=False``: one model scores them all.
    """
    workspace = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    device = resolve_device(device)
    loaded = load_model(workspace.model_dir(name) / "model.pt", device=device)
    expected = loaded.features
    index = _load_index(workspace)
    with FeatureCache(workspace.cache_path(expected["set"])) as cache:
        check_features(expected, cache, name=name)
        clips = _cached_clips(cache, index)
        if ids is not None:
            wanted = set(ids)
            missing = sorted(wanted - {c.id for c in clips})
            if missing:
                raise GemoError(f"{len(missing)} clip(s) not in the {expected['set']} cache or "
                                f"index, e.g. {missing[:3]}")
            clips = [c for c in clips if c.id in wanted]
        arrays = _Arrays(cache, loaded.inputs, expected["set"])
        batch_size = batch_size or loaded.checkpoint["hyperparameters"].get("batch_size", 64)
        probs, embeddings = predict_arrays(loaded.model, loaded.inputs, arrays,
                                           [c.id for c in clips], device=device,
                                           batch_size=batch_size)
    return ScoreTable(name, [c.id for c in clips], [c.split for c in clips], probs,
                      np.zeros(len(clips), bool), embeddings,
                      {"modality": loaded.checkpoint["modality"], "features": expected["set"],
                       "architecture": loaded.checkpoint["architecture"],
                       "fingerprint": expected["fingerprint"]})


def check_features(expected, cache, *, name):
    """Refuse a cache whose features are not those the model was trained on."""
    if cache.fingerprint() == expected["fingerprint"] and (
        not expected.get("feature_names")
        or list(cache.info.get("feature_names", [])) == expected["feature_names"]
    ):
        return
    own = cache.provenance
    differences = []
    if own["feature_set"] != expected["set"]:
        differences.append(f"feature set: model {expected['set']!r}, cache {own['feature_set']!r}")
    if own["extractor_version"] != expected.get("extractor_version"):
        differences.append(f"extractor version: model {expected.get('extractor_version')}, "
                           f"cache {own['extractor_version']}")
    trained = expected.get("params", {})
    for key in sorted(set(trained) | set(own["params"])):
        if trained.get(key) != own["params"].get(key):
            differences.append(
                f"{key}: model {trained.get(key)!r}, cache {own['params'].get(key)!r}")
    if expected.get("feature_names") and list(own["info"].get("feature_names", [])) != list(
            expected["feature_names"]):
        differences.append("feature names differ")
    if not differences:
        differences.append(f"fingerprint: model {expected['fingerprint']}, "
                           f"cache {cache.fingerprint()}")
    raise GemoError(
        f"model {name} was trained on other {expected['set']} features than {cache.path}:\n  "
        + "\n  ".join(differences)
        + f"\nretrain it (`gemo train`) or re-extract {expected['set']} with the model's settings"
    )


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
    labels = np.array([c.label for c in clips])
    groups = np.array([c.group for c in clips])
    with warnings.catch_warnings():
        # "The least populated class has only n members": expected on small data sets.
        warnings.simplefilter("ignore", UserWarning)
        split = StratifiedGroupKFold(n_splits=parts, shuffle=True, random_state=seed)
        fold_of = {}
        for fold, (_, held) in enumerate(split.split(np.zeros(len(clips)), labels, groups)):
            for row in held:
                fold_of[clips[row].id] = fold
    return fold_of


class _Arrays:
    """Per-clip arrays read from the cache on demand (a set of frames can exceed memory)."""

    def __init__(self, cache, inputs, feature_set):
        self.cache, self.inputs, self.feature_set = cache, inputs, feature_set
        self._finite = {}

    def get(self, clip_id):
        return _read(self.cache, clip_id, self.inputs, self.feature_set)

    def finite(self, clip_id):
        if not self.inputs.may_be_nonfinite:
            return True  # no need to read every clip's frames just to find no NaN
        if clip_id not in self._finite:
            self._finite[clip_id] = is_finite(self.get(clip_id))
        return self._finite[clip_id]


def _load_index(workspace):
    try:
        return workspace.load_index()
    except FileNotFoundError as error:
        raise GemoError(str(error)) from None


def _read(cache, clip_id, inputs, feature_set=""):
    arrays = cache.read(clip_id)
    return arrays if inputs is None else inputs.check(clip_id, arrays, feature_set)


def _main_ndim(sample):
    array = sample.get("frames", sample.get("features"))
    return None if array is None else array.ndim


def _input_dim(family, sample, feature_set):
    if family.input_kind == "frames":
        if "frames" not in sample:
            raise GemoError(f"model {family.name} needs frames; {feature_set} has "
                            f"{', '.join(sorted(sample))}")
        return int(sample["frames"].shape[-1])
    if "features" not in sample:
        raise GemoError(f"model {family.name} needs a features array; {feature_set} has "
                        f"{', '.join(sorted(sample))}")
    return int(sample["features"].shape[-1])


def _cached_clips(cache, index):
    """Index clips present in the cache, train/val/test then index order."""
    stored = set(cache.ids())
    order = {split: i for i, split in enumerate(SPLIT_ORDER)}
    return sorted((c for c in index.clips if c.id in stored),
                  key=lambda c: order.get(c.split, len(order)))


@dataclass
class _Result:
    model: torch.nn.Module
    inputs: object
    history: dict
    best_epoch: int
    best_loss: float
    best_accuracy: float
    n_fit: int
    n_holdout: int
    seconds: float

    def summary(self, *, with_curves=False):
        out = {"best_epoch": self.best_epoch, "holdout_loss": self.best_loss,
               "holdout_accuracy": self.best_accuracy,
               "epochs_run": len(self.history["train_loss"]),
               "n_fit": self.n_fit, "n_holdout": self.n_holdout, "seconds": round(self.seconds, 2)}
        if with_curves:
            out.update(self.history)
        else:
            out["holdout_loss_curve"] = self.history["holdout_loss"]
        return out


class _Runner:
    """Trains one model with the recipe: used for every fold and the final model."""

    def __init__(self, *, family, config, recipe, arrays, device, pretrained, progress):
        self.family, self.config, self.recipe = family, config, recipe
        self.arrays, self.device = arrays, device
        self.pretrained = pretrained  # (backbone state, source) or None
        self.progress = progress
        self.bar, self.threads = None, torch.get_num_threads()

    @contextmanager
    def session(self, seed):
        with _deterministic(seed), (_progress_bar() if self.progress else nullcontext()) as bar:
            self.bar, self.threads = bar, torch.get_num_threads()
            try:
                yield self
            finally:
                self.bar = None

    def fit(self, clips, *, seed, label):
        started = time.perf_counter()
        fit, held = holdout_split(clips, share=self.recipe.holdout, seed=seed)
        _seed_everything(seed)
        model = models.create(self.family, **self.config)
        if self.pretrained is not None:
            model.use_pretrained(self.pretrained[0])
        # Generators: clips are read from the cache as needed, not all held raw in memory.
        inputs = inputs_for(model).fit(self.arrays.get(c.id) for c in fit)
        train_set = (*inputs.tensors((self.arrays.get(c.id) for c in fit), train=True),
                     torch.tensor([c.label for c in fit]))
        held_set = (*inputs.tensors(self.arrays.get(c.id) for c in held),
                    torch.tensor([c.label for c in held]))
        task = None
        if self.bar is not None:
            task = self.bar.add_task(label, total=self.recipe.epochs, stats="")
        history, best = fit_model(model, inputs, train_set, held_set, recipe=self.recipe,
                                  seed=seed, device=self.device,
                                  on_epoch=lambda epoch, row: self._report(task, epoch, row))
        if task is not None:
            self.bar.update(task, total=len(history["train_loss"]),
                            completed=len(history["train_loss"]),
                            stats=f"best epoch {best['epoch']}: hold-out loss {best['loss']:.3f} "
                                  f"acc {best['accuracy']:.2f}")
        model.eval()
        return _Result(model, inputs, history, best["epoch"], best["loss"], best["accuracy"],
                       len(fit), len(held), time.perf_counter() - started)

    def score(self, result, ids, *, oof):
        """``{id: (probs, embedding, oof)}`` of ``result``'s model on ``ids``."""
        probs, embeddings = predict_arrays(result.model, result.inputs, self.arrays, ids,
                                           device=self.device, batch_size=self.recipe.batch_size)
        return {clip_id: (probs[i], embeddings[i], oof) for i, clip_id in enumerate(ids)}

    def _report(self, task, epoch, row):
        if task is not None:
            self.bar.update(task, completed=epoch, stats=(
                f"loss {row['train_loss']:.3f}/{row['holdout_loss']:.3f} "
                f"acc {row['train_acc']:.2f}/{row['holdout_acc']:.2f} (train/hold-out)"))


def fit_model(model, inputs, train_set, holdout_set, *, recipe, seed, device="cpu", on_epoch=None):
    """The loop: Adam + cross-entropy, early stopping on hold-out loss, best weights kept.

    ``train_set`` / ``holdout_set`` are tuples of tensors, labels last. Returns
    ``(history, best)``; ``model`` ends with the best epoch's weights.
    """
    model.to(device)
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
            loss = F.cross_entropy(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(labels)
            correct += int((logits.argmax(1) == labels).sum())
            count += len(labels)
        held_loss, held_acc = evaluate(model, inputs, holdout_set, device=device,
                                       batch_size=recipe.batch_size)
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
def evaluate(model, inputs, dataset, *, device="cpu", batch_size=64):
    """``(mean cross-entropy, accuracy)`` of ``model`` on a tuple of tensors, labels last."""
    model.eval()
    *tensors, labels = dataset
    total, correct = 0.0, 0
    for start in range(0, len(labels), batch_size):
        part = [t[start : start + batch_size] for t in tensors]
        batch = [t.to(device) for t in inputs.batch(part)]
        y = labels[start : start + batch_size].to(device)
        logits = model(*batch)
        total += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
    return total / len(labels), correct / len(labels)


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
        return np.zeros((0, len(CLASSES)), np.float32), np.zeros((0, 0), np.float32)
    return torch.cat(probs).numpy(), torch.cat(embeddings).numpy()


def _score_table(name, clips, scores, *, attrs):
    rows = [scores[c.id] for c in clips]
    return ScoreTable(name, [c.id for c in clips], [c.split for c in clips],
                      np.stack([r[0] for r in rows]), np.array([r[2] for r in rows]),
                      np.stack([r[1] for r in rows]), attrs)


def _accuracy(table, clips, split, *, oof_only=False):
    label = {c.id: c.label for c in clips}
    rows = [i for i, (clip_id, s) in enumerate(zip(table.ids, table.splits, strict=True))
            if s == split and label[clip_id] is not None and (table.oof[i] or not oof_only)]
    if not rows:
        return None
    truth = np.array([label[table.ids[i]] for i in rows])
    return round(float((table.probs[rows].argmax(1) == truth).mean()), 4)


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


def _progress_bar():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from gemo.progress import console  # stderr, like every other bar of gemo

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(bar_width=20),
                    MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.fields[stats]}"),
                    console=console)


def plot_curves(path, history, *, title):
    """Loss and accuracy per epoch (train and hold-out) of the final model; fold hold-out
    losses in grey."""
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
    left.plot(epochs, final["holdout_loss"], label="hold-out")
    right.plot(epochs, final["train_acc"], label="train")
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


def _check_positive(**values):
    for key, value in values.items():
        if not value or value <= 0:
            raise GemoError(f"{key} must be positive, got {value!r}")


def _write_json(path, data):
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    tmp.replace(path)
