"""Evaluate every score table on a split: metrics, plots, prediction files, ablation, group sizes.

>>> result = evaluate(workspace=Workspace("gemo-work"), split="val")   # doctest: +SKIP
>>> result["models"]["fusion-svm"]["accuracy"]                         # doctest: +SKIP
0.618

Writes under ``reports/<split>/``: ``metrics.json``, ``confusion-<model>.png``
per model (labelled splits), with ``embedding_maps`` ``embedding-<model>.png`` (a
t-SNE map of its embeddings, or of its probabilities for a table without any,
coloured by true class), and ``predictions-<model>.txt`` per model (every split;
the VGAF submission / label-file format).

Honesty rules:

* a clip a model never scored gets no label from it: it is left out of that
  model's predictions and metrics, counted in ``n_unscored`` and named, with
  the command that would score it;
* a model or fusion evaluated on clips it was fitted on (train rows of a model
  trained without folds, val rows of a ``--full-train`` fusion) is marked in
  every table, JSON entry (``fitted``: ``in-sample`` or ``cross-fitted``) and plot;
* a fusion whose input scores changed since it was fitted is stale: it is
  refused (listed under ``refused``) until ``gemo fuse`` refits it.
"""

import json

import numpy as np
from rich.console import Console
from rich.markup import escape

from gemo import artifacts
from gemo.data.index import SPLITS
from gemo.errors import GemoError
from gemo.files import write_text
from gemo.evaluation.ablation import ablate as ablate_fusion
from gemo.evaluation.groups import BUCKETS, SMALL_BELOW, bucket, load_group_sizes
from gemo.evaluation.metrics import summarize
from gemo.evaluation.plots import MIN_EMBEDDING_CLIPS, save_confusion_png, save_embedding_png
from gemo.evaluation.predictions import write_predictions
from gemo.evaluation.report import ablation_table, group_size_table, metrics_table
from gemo.labels import CLASSES
from gemo.progress import console as log_console
from gemo.progress import status
from gemo.scores import align, load_tables, oof_flags

BY = ("group-size",)


def evaluate(
    *,
    workspace,
    split="val",
    json_path=None,
    ablate=False,
    by=None,
    progress=True,
    console=None,
    group_sizes=None,
    group_size_from="faces",
    embedding_maps=False,
):
    """Score every table in ``scores/`` on ``split``, print tables, write reports; return it all.

    ``ablate``: refit each fusion found with each input model left out.
    ``by="group-size"``: also report per group-size bucket, from ``group_sizes``
    (``{clip id: mean faces per frame}``) or else the mean per-frame count of the
    ``group_size_from`` cache: ``faces`` (as Pinto 2020 counted) or ``pose`` (persons).
    ``embedding_maps``: also draw each model's t-SNE map (``embedding_png``; None and a note
    when fewer than 10 of its clips are labelled).
    ``console``: a :class:`rich.console.Console` to print the tables to (the CLI
    passes stdout's); None prints none. Progress and notes go to stderr.
    """
    if split not in SPLITS:
        raise GemoError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    if by is not None and by not in BY:
        raise GemoError(f"unknown breakdown {by!r}; use one of {', '.join(BY)}")
    console = console or Console(quiet=True)
    clips = workspace.load_index().split(split)
    if not clips:
        raise GemoError(f"the dataset index has no {split} clips")
    names = artifacts.names_of(workspace)
    if not names:
        raise GemoError("no trained model has scores in this workspace: run `gemo train` first")
    refused = _stale_fusions(workspace, names)
    names = [name for name in names if name not in refused]
    ids = [clip.id for clip in clips]
    labelled = np.array([clip.label is not None for clip in clips])
    truth = np.array([-1 if clip.label is None else clip.label for clip in clips])
    labels = truth[labelled]
    fusions = [name for name in names if artifacts.is_fusion(name)]
    if (ablate or by) and not labelled.any():
        raise GemoError(f"{split} clips have no labels: ablation and breakdowns need labels")
    if ablate and not fusions:
        raise GemoError("nothing to ablate: no fusion score table found; run `gemo fuse` first")
    sizes = (load_group_sizes(workspace=workspace, group_sizes=group_sizes,
                              counter=group_size_from) if by else None)

    reports = workspace.reports_dir(split, create=True)
    labelled_ids = [clip_id for clip_id, keep in zip(ids, labelled) if keep]
    result = {
        "split": split,
        "classes": list(CLASSES),
        "n_clips": len(ids),
        "n_labelled": int(labelled.sum()),
        "models": {},
        "predictions": {},
        "unscored": {},
        "refused": refused,
    }
    for name, reason in refused.items():
        log_console.print(f"[yellow]refused:[/] {name}: {escape(reason)}", soft_wrap=True)
    predicted = {}
    for name, table in load_tables(workspace=workspace, names=names).items():
        classes, scored = _predict(table, ids)
        predicted[name] = classes[labelled]  # -1 where unscored
        path = write_predictions(reports / f"predictions-{name}.txt",
                                 [i for i, keep in zip(ids, scored) if keep], classes[scored])
        result["predictions"][name] = str(path)
        if not scored.all():
            result["unscored"][name] = _unscored(workspace, name, ids, scored)
        rows = labelled & scored
        if rows.any():
            metrics = summarize(truth[rows], classes[rows])
            rows_ids = [i for i, keep in zip(ids, rows) if keep]
            fitted = fit_mark(table, split, rows_ids)
            mark = f"; fitted on {split}: {fitted}" if fitted else ""
            png = save_confusion_png(
                reports / f"confusion-{name}.png",
                metrics["confusion"],
                title=f"{name} on {split} (acc {100 * metrics['accuracy']:.1f}%, "
                      f"n={metrics['n']}{mark})",
            )
            result["models"][name] = {
                **metrics,
                "n_unscored": int((labelled & ~scored).sum()),
                "fitted": fitted,
                "confusion_png": str(png),
            }
            if embedding_maps:  # t-SNE takes seconds per model: asked for, not by default
                result["models"][name]["embedding_png"] = _embedding_plot(
                    reports, table.select(rows_ids), split, truth[rows], classes[rows], mark)

    if labelled.any():  # models that scored none of its clips are named above, as unscored
        console.print(metrics_table(result["models"], title=f"{split}: {labelled.sum()} labelled clips"))
    else:
        console.print(f"{split} has no labels: wrote predictions in the VGAF label format:")
        for name, path in result["predictions"].items():
            console.print(f"  {name}: {path}")

    if ablate:
        result["ablation"] = {}
        for name in fusions:
            score = lambda table: _scored_metrics(table, labelled_ids, labels)  # noqa: E731
            entry = ablate_fusion(
                workspace=workspace,
                name=name,
                reference={k: v for k, v in result["models"][name].items()
                           if not k.endswith("_png")},
                ids=labelled_ids,
                labels=labels,
                score=score,
                status=lambda message: status(message, enabled=progress),
            )
            result["ablation"][name] = entry
            console.print(ablation_table(name, entry))  # stale fusions were refused above

    if by == "group-size":
        counter = "given" if group_sizes is not None else group_size_from
        result["by_group_size"] = {"counter": counter,
                                   **_by_group_size(labelled_ids, labels, predicted, sizes)}
        console.print(group_size_table(result["by_group_size"]))

    text = json.dumps(result, indent=1)
    result["metrics_path"] = str(write_text(reports / "metrics.json", text + "\n"))
    if json_path is not None:
        result["json_path"] = str(write_text(json_path, text + "\n"))
    return result


def _predict(table, ids):
    """Argmax class of ``table`` for ``ids`` (-1 where it has no score), and which it scored."""
    probs, missing = align({table.model: table}, ids)
    scored = ~missing[:, 0]
    return np.where(scored, probs.argmax(axis=1), -1), scored


def _embedding_plot(reports, table, split, truth, predicted, mark):
    """``embedding-<model>.png``: a t-SNE map of the table's embeddings (its probabilities when
    it has none, as a fusion's table) on the scored labelled clips; None, with a note, when
    there are too few of them."""
    if len(table.ids) < MIN_EMBEDDING_CLIPS:
        log_console.print(f"[yellow]note:[/] no embedding map of {table.model}: "
                          f"{len(table.ids)} labelled {split} clip(s), fewer than "
                          f"{MIN_EMBEDDING_CLIPS}", soft_wrap=True)
        return None
    space = "embeddings" if table.embeddings is not None else "probabilities"
    x = table.embeddings if table.embeddings is not None else table.probs
    title = f"{table.model} on {split}: t-SNE of its {space} (n={len(x)}{mark})"
    return str(save_embedding_png(reports / f"embedding-{table.model}.png", x, truth, predicted,
                                  title=title))


def _scored_metrics(table, ids, labels):
    classes, scored = _predict(table, ids)
    return summarize(labels[scored], classes[scored])


def fit_mark(table, split, ids):
    """How ``table`` saw the clips ``ids`` of ``split``: None (held out), ``"in-sample"``
    (scored by a model fitted on them) or ``"cross-fitted"`` (fitted on the split, each
    clip scored by a fold fit without it)."""
    fitted_on = table.attrs.get("fitted_on")
    if fitted_on is None:  # tables written before gemo recorded it
        fitted_on = ["train", "val"] if table.attrs.get("full_train") else ["train"]
    if split not in fitted_on or not ids:
        return None
    return "cross-fitted" if oof_flags(table, ids).all() else "in-sample"


def _stale_fusions(workspace, names):
    """``{fusion: reason}`` for fusions whose input scores changed since they were fitted."""
    refused = {}
    for name in names:
        config = artifacts.read_config(workspace, name) if artifacts.is_fusion(name) else None
        stale = artifacts.stale_inputs(workspace, config) if config else []
        if stale:
            refused[name] = (f"its input(s) {', '.join(stale)} changed or went since it was "
                             f"fitted; refit it: {config.get('command') or 'gemo fuse'}")
    return refused


def _unscored(workspace, name, ids, scored):
    """Name the clips ``name`` did not score and say how to score them."""
    missing = [clip_id for clip_id, keep in zip(ids, scored) if not keep]
    command = (artifacts.read_config(workspace, name) or {}).get("command")
    how = (f"to score them: `gemo extract` (if not done), then `{command}`" if command
           else "to score them: `gemo extract` (if not done), then retrain the model")
    log_console.print(f"[yellow]unscored:[/] {name} has no score for {len(missing)} clip(s) "
                      f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}), so no "
                      f"label from it; {escape(how)}", soft_wrap=True)
    return {"n": len(missing), "ids": missing, "how": how}


def _by_group_size(ids, labels, predicted, sizes):
    """Metrics of every model on the clips of each bucket; clips without a size are counted apart."""
    names = np.array([bucket(sizes[i]) if i in sizes else "unknown" for i in ids])
    out = {
        "small_below": SMALL_BELOW,
        "counts": {b: int((names == b).sum()) for b in (*BUCKETS, "unknown")},
        "buckets": {},
    }
    for b in BUCKETS:
        rows = names == b
        out["buckets"][b] = {
            model: summarize(labels[rows & (classes >= 0)], classes[rows & (classes >= 0)])
            for model, classes in predicted.items() if (rows & (classes >= 0)).any()
        }
    return out


