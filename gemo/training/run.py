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

import shlex
import time

import numpy as np
import torch

import gemo
from gemo import artifacts, models, threads
from gemo.device import resolve_device
from gemo.errors import GemoError
from gemo.files import plain, write_json
from gemo.models.checkpoint import build_checkpoint, load_model, save_checkpoint
from gemo.models.classical import Classical
from gemo.models.inputs import inputs_for
from gemo.scores import ONE_ENCODER, ScoreTable, save_scores
from gemo.training.crossfit import Runner, cross_fit
from gemo.training.features import (CacheArrays, cached_clips, check_features, describe,
                                    feature_list, input_dim, main_ndim, missing_by_set,
                                    open_cache, read)
from gemo.training.loop import amp_dtype, predict_arrays
from gemo.training.plots import plot_curves
from gemo.training.recipe import LOOP_OPTIONS, Recipe
from gemo.training.splits import assign_folds
from gemo.workspace import Workspace

MODALITIES = ("audio", "scene", "face", "pose", "multimodal")


def train(*, workspace, modality, features, model=None, name=None, overwrite=False,
          backbone=None, pretrained=False, weights=None, epochs=Recipe.epochs,
          batch_size=Recipe.batch_size, lr=Recipe.lr, patience=Recipe.patience,
          folds=Recipe.folds, seed=Recipe.seed, class_weight=Recipe.class_weight,
          optimizer=Recipe.optimizer, momentum=Recipe.momentum, nesterov=Recipe.nesterov,
          weight_decay=Recipe.weight_decay, label_smoothing=Recipe.label_smoothing,
          schedule=Recipe.schedule, step_every=Recipe.step_every, step_factor=Recipe.step_factor,
          backbone_lr_scale=Recipe.backbone_lr_scale, freeze_backbone=False, amp=Recipe.amp,
          full_train=Recipe.full_train, device="auto", progress=True, **model_options):
    """Train a model of ``modality`` on ``features``, write it and its scores; returns a summary.

    ``model`` picks the family (default by feature set: pyaudio/compare-lld ->
    blstm-attention, egemaps -> mlp, frames -> frame-cnn, fer and pose -> face-lstm);
    ``backbone`` and any other keyword (``hidden=32``, ``input_size=64``...) are the
    family's options.
    ``modality="multimodal"`` takes a comma list of two or more sets (``features=
    "embed-mobilenet_v2,pyaudio"``, default model cross-attention), read together by clip id:
    a clip missing from any of them is left out (``n_missing_by_set``).
    ``name`` defaults to ``<modality>-<features>-<family>`` (commas as ``-``); a model of that
    name trained with other options is refused unless ``overwrite`` (see :mod:`gemo.artifacts`).
    ``pretrained=True`` loads ImageNet weights into the backbone (searched as
    :mod:`gemo.pretrained` says; ``weights``, a known name, folder or file, implies it).
    ``batch_size`` None takes the family's default (128 for audio, 16 for frames).
    ``folds`` < 2 turns cross-fitting off (train rows then are in-sample, oof=False).
    ``class_weight="balanced"`` weighs each class by n_samples / (n_classes * count), counted on
    each model's own training clips (fold or final).
    ``optimizer`` (adam, adamw, sgd with ``momentum`` and ``nesterov``), ``weight_decay``,
    ``label_smoothing`` and ``schedule`` (none, cosine over ``epochs``, step: ``step_factor``
    every ``step_every`` epochs) shape the loop; ``backbone_lr_scale`` multiplies the learning
    rate of the model's backbone, ``freeze_backbone`` fixes it (the family's ``freeze``
    option), both refused by a model without one. ``amp``: mixed precision, CUDA only.
    ``full_train`` (Pinto 2020's protocol for a test submission) trains ``<name>-full`` on the
    labelled train + val clips for a fixed number of epochs, without hold-out nor early
    stopping: the best epoch of the train-only model ``name`` made with the same options, or
    ``epochs`` when there is none; its val rows are in-sample (``fitted_on`` train and val)
    and it reports no val accuracy. See docs/training.md.
    The defaults are :class:`gemo.training.recipe.Recipe`'s.
    """
    started = time.perf_counter()
    workspace = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    if modality not in MODALITIES:
        raise GemoError(f"unknown modality {modality!r}; choose from {', '.join(MODALITIES)}")
    _check_modality(modality, features)
    pretrained = bool(pretrained or weights is not None)  # a weights file implies it
    recipe = Recipe(epochs=epochs, lr=lr, patience=patience, folds=folds, seed=seed,
                    batch_size=batch_size or None, class_weight=class_weight,
                    optimizer=optimizer, momentum=momentum, nesterov=nesterov,
                    weight_decay=weight_decay, label_smoothing=label_smoothing,
                    schedule=schedule, step_every=step_every, step_factor=step_factor,
                    backbone_lr_scale=backbone_lr_scale, amp=amp, full_train=full_train)
    problem = recipe.check()
    if problem:
        raise GemoError(problem)
    device = resolve_device(device)
    if recipe.amp and not device.startswith("cuda"):
        # Refused rather than ignored: the recorded request would say --amp for a run without it.
        raise GemoError(f"--amp is mixed precision on a CUDA GPU and this run is on {device}: "
                        "drop --amp, or train with --device cuda on a machine with a GPU")
    index = workspace.load_index()
    _check_cached(workspace, features)

    with open_cache(workspace, features) as cache:
        clips = cached_clips(cache, index)
        if not clips:
            raise GemoError(f"the {features} cache has no clip of the indexed dataset: "
                            f"run `gemo extract` for {features} first")
        sample = read(cache, clips[0].id, None)
        family = models.get(model or models.default_model(features, ndim=main_ndim(sample)))
        options = dict(model_options)
        if backbone is not None:
            if "backbone" not in family.Options.defaults():
                raise GemoError(f"model {family.name} has no backbone option")
            options["backbone"] = backbone
        if freeze_backbone:
            if "freeze" not in family.Options.defaults():
                raise GemoError(f"model {family.name} has no backbone to freeze: "
                                "drop --freeze-backbone")
            options["freeze"] = True
        if pretrained and not hasattr(family, "pretrained_state"):
            raise GemoError(f"model {family.name} has no pretrained weights")
        probe = models.create(family.name, input_dim=input_dim(family, sample, features),
                              **options)  # fails now, before reading, on a bad option
        config = probe.config  # typed and complete: what the checkpoint will hold
        _check_loop_options(probe, recipe)
        # Weights are found, verified and checked once, before any data is read.
        backbone_weights = probe.pretrained_state(weights=weights) if pretrained else None
        recipe = recipe.resolved(family.train_defaults.get("batch_size", 32))
        base = artifacts.check_name(
            name or f"{modality}-{features.replace(',', '-')}-{family.name}")
        name = artifacts.check_name(f"{base}-full" if recipe.full_train else base)
        request = {"modality": modality, "features": features, "model": family.name,
                   "options": probe.options.as_dict(), "recipe": recipe.per_model(),
                   "folds": recipe.folds, "seed": recipe.seed,
                   "pretrained": pretrained,
                   "weights": None if weights is None else str(weights),
                   "full_train": recipe.full_train}
        artifacts.claim(workspace, name, request, overwrite=overwrite, what="model")
        fixed_epochs, epochs_from = (
            _fixed_epochs(workspace, base, request)
            if recipe.full_train and not isinstance(probe, Classical) else (None, None))
        feature_meta = describe(cache, features)
        missing_sets = missing_by_set(cache, index)
        arrays = CacheArrays(cache, inputs_for(probe), features)  # the pipeline checks array shapes
        del probe

        labelled = [c for c in clips if c.split == "train" and c.label is not None]
        if not labelled:
            raise GemoError(f"{name}: no train clip has a label: add the dataset's train labels "
                            "(Train_labels.txt, or the label column of a CSV manifest) and "
                            "index it again with `gemo extract DATASET`")
        val = [c for c in clips if c.split == "val" and c.label is not None]
        if recipe.full_train and not val:
            raise GemoError(f"{name}: --full-train trains on train+val, but no val clip has a "
                            "label: add the val labels, or train without --full-train")
        val = val if recipe.full_train else []
        finite = {c.id for c in (*labelled, *val) if arrays.finite(c.id)}
        dropped = sorted(c.id for c in (*labelled, *val) if c.id not in finite)
        if len({c.label for c in labelled if c.id in finite}) < 2:
            raise GemoError(f"{name}: training needs labelled train clips of at least two classes "
                            f"with finite features ({len(finite)} usable)")
        fold_of = (assign_folds(labelled, folds=recipe.folds, seed=recipe.seed)
                   if recipe.folds >= 2 else {})

        runner = Runner(family=family.name, config=config, recipe=recipe, arrays=arrays,
                        device=device, pretrained=backbone_weights, progress=progress,
                        fixed_epochs=fixed_epochs)
        with runner.session(recipe.seed):
            fitted = cross_fit(runner, name=name, clips=clips, labelled=labelled, usable=finite,
                               fold_of=fold_of, seed=recipe.seed, final_extra=val)
    final = fitted.final

    hyper = {**recipe.per_model(), "folds": recipe.folds if fold_of else 0, "seed": recipe.seed,
             "device": device, "threads": runner.threads, "model": family.name,
             "pretrained": backbone_weights is not None,
             "weights": None if weights is None else str(weights),
             "amp_dtype": str(amp_dtype(device)).removeprefix("torch.") if recipe.amp else None,
             "full_train": recipe.full_train, "fixed_epochs": fixed_epochs,
             "epochs_from": epochs_from}
    fitted_on = ["train", "val"] if recipe.full_train else ["train"]
    training = {
        **final.summary(),
        "fitted_on": fitted_on,
        "n_train_clips": len(labelled),
        "n_val_clips": len(val),
        "n_used": len(finite),
        "dropped_nonfinite": dropped,
        "pretrained_source": None if backbone_weights is None else backbone_weights[1],
    }
    checkpoint = build_checkpoint(model=final.model, inputs=final.inputs, name=name,
                                  modality=modality, features=feature_meta, hyperparameters=hyper,
                                  training=training, seed=recipe.seed)
    out = workspace.model_dir(name, create=True)
    save_checkpoint(out / "model.pt", checkpoint)
    table = _score_table(name, clips, fitted.scores, attrs={
        "modality": modality, "features": features, "architecture": family.name,
        "fingerprint": feature_meta["fingerprint"], "folds": hyper["folds"],
        "train_rows": "out-of-fold (fold models)" if fold_of else "in-sample (final model)",
        "fitted_on": fitted_on, "full_train": recipe.full_train, "embeddings": ONE_ENCODER,
    })
    save_scores(workspace.scores_path(name), table)
    history = {"final": final.summary(with_curves=True), "folds": fitted.folds}
    write_json(out / "history.json", history)
    if final.history["train_loss"]:
        plot_curves(out / "curves.png", history, title=f"{name} ({family.name})")
    else:  # a classical model (svm, logreg) has no epochs: no curves, nor a replaced model's
        (out / "curves.png").unlink(missing_ok=True)
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
        # A full-train model was fitted on val: its val accuracy is not a measure (no val metrics).
        "val_accuracy": None if recipe.full_train else _accuracy(table, clips, "val"),
        "full_train": recipe.full_train,
        "epochs_from": epochs_from,
        "n_scored": len(table.ids),
        "n_dropped_nonfinite": len(dropped),
        "n_missing_from_cache": len(index.clips) - len(clips),
        "n_missing_by_set": missing_sets,  # multimodal: a clip missing from any set is left out
        "seconds": round(time.perf_counter() - started, 2),
    }
    write_json(out / "config.json", {
        "name": name, "request": plain(request),
        "command": _command(name, request), "modality": modality, "features": feature_meta,
        "architecture": family.name, "config": final.model.config, "hyperparameters": hyper,
        "training": training, "folds": fold_of, "summary": summary,
        "gemo_version": gemo.__version__, "torch_version": torch.__version__,
    })
    return summary


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
    index = workspace.load_index()
    with open_cache(workspace, expected["set"]) as cache:
        check_features(expected, cache, name=name)
        clips = cached_clips(cache, index)
        if ids is not None:
            wanted = set(ids)
            missing = sorted(wanted - {c.id for c in clips})
            if missing:
                raise GemoError(f"{len(missing)} clip(s) not in the {expected['set']} cache or "
                                f"index, e.g. {missing[:3]}")
            clips = [c for c in clips if c.id in wanted]
        probs, embeddings = score_cached(loaded, cache, [c.id for c in clips], device=device,
                                         batch_size=batch_size)
    return ScoreTable(name, [c.id for c in clips], [c.split for c in clips], probs,
                      np.zeros(len(clips), bool), embeddings,
                      {"modality": loaded.checkpoint["modality"], "features": expected["set"],
                       "architecture": loaded.checkpoint["architecture"],
                       "fingerprint": expected["fingerprint"]})


def _check_loop_options(model, recipe):
    """Refuse loop options the model cannot take, in one line, before any data is read."""
    changed = recipe.changed_loop_options()
    if isinstance(model, Classical) and changed:
        raise GemoError(f"model {model.name} is fitted by its own grid search, not the training "
                        f"loop: {', '.join(changed)} do(es) not apply; drop them")
    if recipe.backbone_lr_scale == 1:
        return
    backbone = getattr(model, "backbone", None)
    if not isinstance(backbone, torch.nn.Module):
        raise GemoError(f"model {model.name} has no backbone whose learning rate to scale: "
                        "drop --backbone-lr-scale (it applies to frame-cnn)")
    if not any(p.requires_grad for p in backbone.parameters()):
        raise GemoError("the backbone is frozen, so it has no learning rate to scale: drop "
                        "--backbone-lr-scale or --freeze-backbone")


def _fixed_epochs(workspace, reference, request):
    """``(epochs, where from)`` of a full-train run: the best epoch of the train-only model
    ``reference`` when it exists (made from the same request), else the request's epochs."""
    config = artifacts.read_config(workspace, reference)
    if config is None:
        return request["recipe"]["epochs"], "epochs"
    differences = artifacts.differences(config.get("request") or {},
                                        plain({**request, "full_train": False}))
    if differences:
        raise GemoError(f"--full-train takes its epoch count from the train-only model "
                        f"{reference}, which was trained with other options "
                        f"({'; '.join(differences)}): train it with these options first, or "
                        "give another --name to train for --epochs epochs")
    return config["summary"]["best_epoch"], f"best epoch of {reference}"


def score_cached(loaded, cache, ids, *, device="cpu", batch_size=None):
    """``(probs, embeddings)`` of a loaded model on the clips ``ids`` of an open feature cache.

    The way a trained model scores cached clips, here and in ``gemo predict``; the cache
    must hold the features it was trained on (:func:`check_features` first).
    ``batch_size`` None: the model's training batch size, as its stored scores used.
    """
    arrays = CacheArrays(cache, loaded.inputs, loaded.features["set"])
    batch_size = batch_size or loaded.checkpoint["hyperparameters"].get("batch_size", 64)
    with threads.limited():
        return predict_arrays(loaded.model, loaded.inputs, arrays, list(ids), device=device,
                              batch_size=batch_size)


def _check_modality(modality, features):
    """Refuse a feature set that describes another modality (``train audio --features frames``),
    and a list of sets but for the multimodal modality, which needs one."""
    from gemo import extractors

    sets = feature_list(features)
    if len(sets) > 1 and modality != "multimodal":
        raise GemoError(f"a list of feature sets trains one model over all of them: "
                        f"`gemo train multimodal --features {features}`")
    if modality == "multimodal":
        if len(sets) < 2:
            raise GemoError(f"a multimodal model reads two or more feature sets: "
                            f"--features {features},SET")
        return
    if features in extractors.available():
        describes = extractors.get(features).modality
        if describes and describes != modality:
            raise GemoError(f"feature set {features} describes {describes}, not {modality}: "
                            f"`gemo train {describes} --features {features}`")


def _check_cached(workspace, features):
    """A missing cache: an unknown name (a typo) or a set not extracted yet, said apart."""
    from gemo import extractors

    if "," in features:
        for one in feature_list(features):
            _check_cached(workspace, one)
        return
    if workspace.cache_path(features).exists():
        return
    if features not in extractors.available():
        raise GemoError(f"unknown feature set {features!r}; available: "
                        f"{', '.join(extractors.available())}")
    raise GemoError(f"the {features} feature set is not extracted in this workspace: "
                    f"`gemo extract --only {features}` first")


def _command(name, request):
    """The `gemo train` command line that makes this model again, for messages."""
    recipe = request["recipe"]
    full_train = request["full_train"]
    words = ["gemo", "train", request["modality"], "--features", request["features"],
             "--model", request["model"],
             # a full-train model is named after its train-only model, which --name names
             "--name", name.removesuffix("-full") if full_train else name,
             "--epochs", recipe["epochs"], "--batch-size", recipe["batch_size"],
             "--lr", recipe["lr"], "--patience", recipe["patience"], "--folds", request["folds"],
             "--seed", request["seed"], "--class-weight", recipe["class_weight"]]
    for key in LOOP_OPTIONS:  # the loop's other options, when set away from their defaults
        if recipe[key] != getattr(Recipe, key):
            flag = f"--{key.replace('_', '-')}"
            words += [flag] if isinstance(recipe[key], bool) else [flag, recipe[key]]
    if full_train:
        words.append("--full-train")
    defaults = models.get(request["model"]).Options.defaults()
    for key, value in sorted(request["options"].items()):
        if value != defaults.get(key):
            words += (["--backbone", value] if key == "backbone" else
                      ["--freeze-backbone"] if key == "freeze" else ["-o", f"{key}={value}"])
    if request["weights"]:
        words += ["--weights", request["weights"]]
    elif request["pretrained"]:
        words.append("--pretrained")
    return " ".join(shlex.quote(str(word)) for word in words)


def _score_table(name, clips, scores, *, attrs):
    """The score table of ``clips`` from ``{clip id: Score}``, in ``clips`` order."""
    rows = [scores[c.id] for c in clips]
    return ScoreTable(name, [c.id for c in clips], [c.split for c in clips],
                      np.stack([r.probs for r in rows]), np.array([r.oof for r in rows]),
                      np.stack([r.embedding for r in rows]), attrs)


def _accuracy(table, clips, split, *, oof_only=False):
    label = {c.id: c.label for c in clips}
    rows = [i for i, (clip_id, s) in enumerate(zip(table.ids, table.splits, strict=True))
            if s == split and label[clip_id] is not None and (table.oof[i] or not oof_only)]
    if not rows:
        return None
    truth = np.array([label[table.ids[i]] for i in rows])
    return round(float((table.probs[rows].argmax(1) == truth).mean()), 4)


