"""Fit a fusion of trained models' scores and write its own score table.

>>> summary = fuse(workspace=Workspace("gemo-work"), method="svm")   # doctest: +SKIP
>>> summary["best_params"], summary["cv_accuracy"]                    # doctest: +SKIP
({'C': 1.0, 'kernel': 'rbf'}, 0.61)

What a fusion learns from, and what its table's ``oof`` column means:

* it is fitted on the labelled train clips, using the models' out-of-fold
  train scores (an in-sample train row is refused: a model's in-sample scores
  are overconfident and fusion would learn to trust them);
* with ``full_train`` it is then refitted, same hyperparameters, on the
  labelled train + val clips (Pinto 2020) before predicting test (refused over
  a model trained with ``--full-train``: its val scores are in-sample);
* a fusion over a model trained with ``--full-train`` saw val through it: its
  table's ``fitted_on`` says so, and evaluation marks its val rows in-sample;
* the rows it was fitted on get cross-fitted scores (grouped k-fold over the
  fit rows, hyperparameters fixed to the chosen ones) and ``oof=True``; the
  other rows are predicted by the final fuser (``oof=True`` on train rows,
  which it never saw either, ``oof=False`` on val/test rows as for models).
  So the fused train scores are honest, up to the hyperparameter choice,
  which saw all train rows.
"""

from dataclasses import dataclass
from importlib import metadata

import joblib
import numpy as np
from sklearn.base import clone

import gemo
from gemo import artifacts, threads
from gemo.cache import fingerprint_file
from gemo.data.index import SPLITS
from gemo.errors import GemoError
from gemo.files import atomic_write, plain, write_json
from gemo.folds import grouped_folds
from gemo.fusion.base import available, create, get
from gemo.labels import N_CLASSES
from gemo.progress import console as log_console
from gemo.progress import status
from gemo.scores import (ONE_ENCODER, ScoreTable, align, load_tables, oof_flags,
                         require_tables, save_scores)

INPUTS = ("probs", "embeddings")
CV_FOLDS = 5


@dataclass
class FusionResult:
    """A fitted fusion, not yet saved: what :func:`fuse` writes and ablation scores."""

    name: str
    fuser: object
    table: ScoreTable
    summary: dict
    config: dict


def fusion_name(method, inputs="probs"):
    """Score-table / model-dir name of a fusion: ``fusion-svm``, ``fusion-fc-embeddings``."""
    return f"{artifacts.FUSION_PREFIX}{method}" + ("" if inputs == "probs" else f"-{inputs}")


def fuse(
    *, workspace, method="svm", models=None, name=None, overwrite=False, full_train=False, seed=0,
    inputs="probs", progress=True
):
    """Fit ``method`` on the scores of ``models`` (default: every non-fusion table) and save it.

    Writes ``models/<name>/fuser.joblib`` and ``config.json`` and
    ``scores/<name>.h5``; ``name`` defaults to :func:`fusion_name`. A fusion of
    that name fitted on other models or settings is refused unless ``overwrite``
    (see :mod:`gemo.artifacts`). Returns the summary dict (best params, CV
    accuracy, models, imputed clips, paths).
    """
    workspace.load_index()  # first: a fresh workspace needs `gemo extract`, not `gemo train`
    models = input_models(workspace, models)
    name = artifacts.check_name(name or fusion_name(method, inputs), fusion=True)
    request = {"method": method, "inputs": inputs, "models": models,
               "full_train": bool(full_train), "seed": seed}
    artifacts.claim(workspace, name, request, overwrite=overwrite, what="fusion")
    result = run_fusion(
        workspace=workspace,
        method=method,
        models=models,
        full_train=full_train,
        seed=seed,
        inputs=inputs,
        progress=progress,
        name=name,
    )
    result.config["request"] = plain(request)
    result.config["command"] = " ".join(
        ["gemo", "fuse", "--method", method, "--models", ",".join(models), "--name", name,
         "--inputs", inputs, "--seed", str(seed)] + (["--full-train"] if full_train else []))
    model_dir = workspace.model_dir(result.name, create=True)
    fuser_path = model_dir / "fuser.joblib"
    atomic_write(fuser_path, lambda tmp: joblib.dump(result.fuser, tmp))
    config_path = model_dir / "config.json"
    write_json(config_path, result.config)
    scores_path = workspace.scores_path(result.name)
    save_scores(scores_path, result.table)
    return {
        **result.summary,
        "fuser_path": str(fuser_path),
        "config_path": str(config_path),
        "scores_path": str(scores_path),
    }


def run_fusion(
    *,
    workspace,
    method="svm",
    models=None,
    full_train=False,
    seed=0,
    inputs="probs",
    progress=False,
    name=None,
):
    """Fit a fusion and score the indexed clips without writing anything: a :class:`FusionResult`.

    A clip that none of ``models`` scored gets no fused score either (no row).
    :func:`fuse` saves its result; ablation refits through it with a model left out.
    """
    if inputs not in INPUTS:
        raise GemoError(f"unknown fusion inputs {inputs!r}; use one of {', '.join(INPUTS)}")
    cls = get(method)
    if inputs not in cls.inputs:
        fitting = [name for name in available() if inputs in get(name).inputs]
        raise GemoError(f"fusion {method} works on {', '.join(cls.inputs)}, not {inputs}: "
                        f"--inputs {cls.inputs[0]}, or fuse {inputs} with --method "
                        f"{' or '.join(fitting)}")
    clips = workspace.load_index().clips  # first: a fresh workspace needs `gemo extract`
    models = input_models(workspace, models)
    tables = load_tables(workspace=workspace, names=models)
    if inputs == "embeddings":
        _require_one_encoder(tables)
    X, missing = align(tables, [clip.id for clip in clips], field=inputs,
                       splits=np.array([clip.split for clip in clips]))
    scored = ~missing.all(axis=1)
    clips = [clip for clip, keep in zip(clips, scored) if keep]
    X, missing = X[scored], missing[scored]
    ids = [clip.id for clip in clips]
    splits = np.array([clip.split for clip in clips])
    labels = np.array([-1 if clip.label is None else clip.label for clip in clips])
    groups = np.array([clip.group for clip in clips])

    train = (splits == "train") & (labels >= 0)
    _require_labels(labels[train], "train")
    fit_rows = train | ((splits == "val") & (labels >= 0)) if full_train else train
    if full_train:
        _require_labels(labels[(splits == "val") & (labels >= 0)], "val", full_train=True)
    _require_oof(tables, [ids[i] for i in np.flatnonzero(fit_rows)], missing[fit_rows],
                 splits[fit_rows])

    params = {"seed": seed} if "seed" in cls().get_params() else {}
    # threads: the fc fuser's BLAS took 2-3x longer with 2 threads beside another job.
    with (status(f"fitting {method} fusion of {len(models)} model(s)", enabled=progress),
          threads.limited(torch=False)):
        fuser = create(method, **params).fit(X[train], labels[train], groups=groups[train])
        selected = fuser.selected()
        cross_fitted = _cross_fit(selected, X, labels, groups, fit_rows, seed)
        final = selected.fit(X[fit_rows], labels[fit_rows], groups=groups[fit_rows]) if full_train else fuser

    probs = final.predict_proba(X)
    probs[fit_rows] = cross_fitted
    # A fuser that encodes its inputs (vae) gives every row its final encoding as embedding.
    embeddings = final.transform(X) if hasattr(final, "transform") else None
    oof = fit_rows | (splits == "train")
    name = name or fusion_name(method, inputs)

    fitted_on = "train+val" if full_train else "train"
    imputed = {
        model: {split: int(missing[splits == split, m].sum()) for split in SPLITS}
        for m, model in enumerate(models)
    }
    n_imputed = int(missing.sum())
    cv_accuracy = float((cross_fitted.argmax(axis=1) == labels[fit_rows]).mean())
    summary = {
        "name": name,
        "method": method,
        "inputs": inputs,
        "models": models,
        "full_train": bool(full_train),
        "seed": seed,
        "fitted_on": fitted_on,
        "n_fit": int(fit_rows.sum()),
        "params": plain(fuser.get_params()),
        "best_params": plain(getattr(fuser, "best_params_", fuser.get_params())),
        "search_cv_accuracy": plain(getattr(fuser, "best_score_", None)),
        "cv_accuracy": cv_accuracy,
        "n_imputed": n_imputed,
        "imputed": imputed,
    }
    for attribute in ("weights_", "converged_", "loss_"):
        if hasattr(final, attribute):
            summary[attribute.rstrip("_")] = plain(getattr(final, attribute))
    if n_imputed and progress:
        counts = {model: sum(per_split.values()) for model, per_split in imputed.items()}
        log_console.print(
            f"[yellow]note:[/] {n_imputed} missing (clip, model) score(s) filled with uniform "
            f"probabilities: {', '.join(f'{m} {n}' for m, n in counts.items() if n)}"
        )
    config = {
        **summary,
        "gemo_version": gemo.__version__,
        "sklearn_version": metadata.version("scikit-learn"),
        "score_tables": {
            model: {
                "path": str(workspace.scores_path(model)),
                "fingerprint": fingerprint_file(workspace.scores_path(model)),
                "info": table.attrs,
                "n_rows": len(table.ids),
            }
            for model, table in tables.items()
        },
        "oof_rule": f"rows of {fitted_on} cross-fitted ({CV_FOLDS} folds grouped by source video); "
        "other train rows predicted by the final fuser",
    }
    table = ScoreTable(
        name,
        np.array(ids),
        splits,
        probs,
        oof,
        embeddings,
        attrs={
            **{key: summary[key] for key in ("method", "inputs", "models", "full_train", "seed")},
            "best_params": summary["best_params"],
            "modality": "fusion",
            "fitted_on": _fitted_on(tables, full_train),
            "imputed": imputed,
            "cv_accuracy": cv_accuracy,
        },
    )
    return FusionResult(name, final, table, summary, config)


def input_models(workspace, models=None):
    """The trained models a fusion takes: ``models`` checked, or every model with scores."""
    if models is None:
        models = [name for name in artifacts.names_of(workspace) if not artifacts.is_fusion(name)]
        if not models:
            raise GemoError("no trained model has scores in this workspace: run `gemo train` first")
    models = list(dict.fromkeys(models))
    if not models:
        raise GemoError("fusion needs at least one model")
    fusions = [name for name in models if artifacts.is_fusion(name)]
    if fusions:
        raise GemoError(f"cannot fuse fusion outputs ({', '.join(fusions)}); name trained models")
    return require_tables(workspace, models)


def _cross_fit(fuser, X, labels, groups, rows, seed):
    """Out-of-fold probabilities for ``rows``, folds grouped by source video."""
    rows = np.flatnonzero(rows)
    out = np.zeros((len(rows), N_CLASSES))
    for fit, held_out in grouped_folds(labels[rows], groups[rows], n_splits=CV_FOLDS, seed=seed,
                                       every_class=True):
        model = clone(fuser).fit(X[rows[fit]], labels[rows[fit]], groups=groups[rows[fit]])
        out[held_out] = model.predict_proba(X[rows[held_out]])
    return out


def _require_one_encoder(tables):
    """Refuse tables whose train rows' embeddings came from fold models (gemo before 0.2)."""
    mixed = [name for name, table in tables.items()
             if table.attrs.get("embeddings") != ONE_ENCODER]
    if mixed:
        raise GemoError(f"{', '.join(mixed)}: embeddings of train rows come from fold models, "
                        "each in a space of its own, so a fusion of embeddings cannot use them; "
                        "retrain with this gemo (same command, --overwrite)")


def _require_labels(labels, split, full_train=False):
    if len(labels) == 0:
        why = "--full-train refits on val" if full_train else "fusion is fitted on train"
        raise GemoError(f"no labelled {split} clips in the dataset index; {why}")
    if len(labels) < 2 * CV_FOLDS or len(np.unique(labels)) < 2:
        raise GemoError(
            f"fusion needs at least {2 * CV_FOLDS} labelled {split} clips of 2+ classes, "
            f"got {len(labels)} of {len(np.unique(labels))} class(es)"
        )


def _fitted_on(tables, full_train):
    """The splits whose clips this fusion saw, itself or through an input model: a model
    trained with ``--full-train`` saw val, so val is not held out for the fusion either."""
    splits = {"train", "val"} if full_train else {"train"}
    for table in tables.values():
        splits.update(table.attrs.get("fitted_on", ["train"]))
    return [split for split in SPLITS if split in splits]


def _require_oof(tables, ids, missing, splits):
    """Refuse a table whose rows to fit on are in-sample: of a split its model was fitted on
    (``fitted_on``) and not scored by a fold model."""
    for m, (name, table) in enumerate(tables.items()):
        fitted_on = table.attrs.get("fitted_on", ["train"])
        in_sample = np.isin(splits, fitted_on) & ~oof_flags(table, ids) & ~missing[:, m]
        if in_sample.any():
            examples = [clip_id for clip_id, bad in zip(ids, in_sample) if bad][:3]
            where = "+".join(split for split in SPLITS if split in set(splits[in_sample]))
            how = (f"fuse without --full-train: {name} was trained on val (--full-train)"
                   if "val" in where else f"retrain {name} with cross-fitting")
            raise GemoError(
                f"score table {name!r} has in-sample scores (oof=False) for {int(in_sample.sum())} "
                f"{where} clip(s), e.g. {', '.join(examples)}: fusion only learns from "
                f"out-of-fold scores; {how}"
            )
