"""Evaluate every score table on a split: metrics, plots, prediction files, ablation, group sizes.

>>> result = evaluate(workspace=Workspace("gemo-work"), split="val")   # doctest: +SKIP
>>> result["models"]["fusion-svm"]["accuracy"]                         # doctest: +SKIP
0.618

Writes under ``reports/<split>/``: ``metrics.json``, ``confusion-<model>.png``
per model (labelled splits) and ``predictions-<model>.txt`` per model (every
split; the VGAF submission / label-file format). A clip missing from a
table is scored as uniform probabilities, i.e. predicted Positive (the first
class), and counted in ``n_imputed``, so every model is judged on the same clips.
"""

import json
import os

import numpy as np
from rich.console import Console

from gemo.data.index import SPLITS
from gemo.errors import GemoError
from gemo.evaluation.ablation import ablate as ablate_fusion
from gemo.evaluation.groups import BUCKETS, SMALL_BELOW, bucket, load_group_sizes
from gemo.evaluation.metrics import summarize
from gemo.evaluation.plots import save_confusion_png
from gemo.evaluation.predictions import write_predictions
from gemo.evaluation.report import ablation_table, group_size_table, metrics_table
from gemo.fusion.inputs import align, available_tables, is_fusion, load_tables
from gemo.labels import CLASSES
from gemo.progress import console as log_console
from gemo.progress import status

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
):
    """Score every table in ``scores/`` on ``split``, print tables, write reports; return it all.

    ``ablate``: refit each fusion found with each input model left out.
    ``by="group-size"``: also report per group-size bucket, from ``group_sizes``
    (``{clip id: mean faces per frame}``) or ``<workdir>/group_sizes.json``.
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
    names = available_tables(workspace=workspace)
    if not names:
        raise GemoError(f"no score tables in {workspace.scores_dir}: run `gemo train` first")
    ids = [clip.id for clip in clips]
    labelled = np.array([clip.label is not None for clip in clips])
    labels = np.array([clip.label for clip in clips if clip.label is not None], dtype=int)
    fusions = [name for name in names if is_fusion(name)]
    if (ablate or by) and not labelled.any():
        raise GemoError(f"{split} clips have no labels: ablation and breakdowns need labels")
    if ablate and not fusions:
        raise GemoError("nothing to ablate: no fusion score table found; run `gemo fuse` first")
    sizes = load_group_sizes(workspace=workspace, group_sizes=group_sizes) if by else None

    reports = workspace.reports_dir(split, create=True)
    labelled_ids = [clip_id for clip_id, keep in zip(ids, labelled) if keep]
    result = {
        "split": split,
        "classes": list(CLASSES),
        "n_clips": len(ids),
        "n_labelled": int(labelled.sum()),
        "models": {},
        "predictions": {},
    }
    predicted = {}
    for name, table in load_tables(workspace=workspace, names=names).items():
        classes, missing = _predict(table, ids)
        predicted[name] = classes[labelled]
        path = write_predictions(reports / f"predictions-{name}.txt", ids, classes)
        result["predictions"][name] = str(path)
        if labelled.any():
            metrics = summarize(labels, classes[labelled])
            png = save_confusion_png(
                reports / f"confusion-{name}.png",
                metrics["confusion"],
                title=f"{name} on {split} (acc {100 * metrics['accuracy']:.1f}%, n={metrics['n']})",
            )
            result["models"][name] = {
                **metrics,
                "n_imputed": int(missing[labelled].sum()),
                "confusion_png": str(png),
            }

    if labelled.any():
        console.print(metrics_table(result["models"], title=f"{split}: {labelled.sum()} labelled clips"))
    else:
        console.print(f"{split} has no labels: wrote predictions in the VGAF label format:")
        for name, path in result["predictions"].items():
            console.print(f"  {name}: {path}")

    if ablate:
        result["ablation"] = {}
        for name in fusions:
            score = lambda table: summarize(labels, _predict(table, labelled_ids)[0])  # noqa: E731
            entry = ablate_fusion(
                workspace=workspace,
                name=name,
                reference={k: v for k, v in result["models"][name].items() if k != "confusion_png"},
                ids=labelled_ids,
                labels=labels,
                score=score,
                status=lambda message: status(message, enabled=progress),
            )
            result["ablation"][name] = entry
            console.print(ablation_table(name, entry))
            if entry["stale_inputs"]:
                log_console.print(
                    f"[yellow]note:[/] {', '.join(entry['stale_inputs'])} changed since {name} was "
                    "fitted; refit it with `gemo fuse` for a fair ablation"
                )

    if by == "group-size":
        result["by_group_size"] = _by_group_size(labelled_ids, labels, predicted, sizes)
        console.print(group_size_table(result["by_group_size"]))

    text = json.dumps(result, indent=1)
    result["metrics_path"] = str(_write(reports / "metrics.json", text))
    if json_path is not None:
        result["json_path"] = str(_write(json_path, text))
    return result


def _predict(table, ids):
    """Argmax class of ``table`` for ``ids``, and which ids it lacked (scored as uniform)."""
    probs, missing = align({table.model: table}, ids)
    return probs.argmax(axis=1), missing[:, 0]


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
        out["buckets"][b] = (
            {model: summarize(labels[rows], classes[rows]) for model, classes in predicted.items()}
            if rows.any()
            else {}
        )
    return out


def _write(path, text):
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w") as handle:
        handle.write(text + "\n")
    os.replace(tmp, path)
    return path
