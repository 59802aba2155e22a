"""Rich tables of the metrics, for the terminal."""

from rich.table import Table

from gemo.labels import CLASSES


def percent(value):
    """``0.6183`` -> ``"61.8"``; undefined values show as a dash."""
    return "-" if value is None else f"{100 * value:.1f}"


FITTED_MARK = " (fitted)"


def metrics_table(models, *, title):
    """One row per score table: n, accuracy, UAR, macro-F1, per-class accuracy, unscored clips.

    A model evaluated on clips it was fitted on is marked ``(fitted)`` after its name.
    """
    caption = (f"per-class accuracy: {', '.join(CLASSES)}; unsc.: clips this model has no "
               "score for (left out)")
    if any(entry.get("fitted") for entry in models.values()):
        caption += (f";{FITTED_MARK}: fitted on these clips ("
                    + ", ".join(sorted({e['fitted'] for e in models.values() if e.get('fitted')}))
                    + "), not a held-out measure")
    table = Table(title=title, caption=caption)
    table.add_column("model", no_wrap=True)
    for column in ("n", "acc %", "UAR %", "F1 %", *(f"{name[:3]} %" for name in CLASSES), "unsc."):
        table.add_column(column, justify="right", no_wrap=True)
    for name, entry in models.items():
        table.add_row(
            name + (FITTED_MARK if entry.get("fitted") else ""),
            str(entry["n"]),
            percent(entry["accuracy"]),
            percent(entry["uar"]),
            percent(entry["f1"]["macro"]),
            *(percent(entry["per_class"][c]) for c in CLASSES),
            str(entry["n_unscored"]),
        )
    return table


def ablation_table(name, ablation):
    """The full fusion, then one row per left-out model with its accuracy change (Fusical Table 3)."""
    table = Table(title=f"ablation of {name} ({ablation['method']})")
    table.add_column("models", no_wrap=True)
    for column in ("acc %", "Δacc", "UAR %", "F1 %", *(f"{c[:3]} %" for c in CLASSES)):
        table.add_column(column, justify="right", no_wrap=True)
    reference = ablation["reference"]
    rows = [("all", reference)] + [(f"without {row['left_out']}", row) for row in ablation["rows"]]
    for label, row in rows:
        delta = None if row is reference else row["delta_accuracy"]
        table.add_row(
            label,
            percent(row["accuracy"]),
            "" if delta is None else f"{100 * delta:+.1f}",
            percent(row["uar"]),
            percent(row["f1"]["macro"]),
            *(percent(row["per_class"][c]) for c in CLASSES),
        )
    return table


def group_size_table(by_size):
    """Accuracy and UAR of every model on small and large groups (Pinto 2020 Table VI)."""
    counts = by_size["counts"]
    counted = {"faces": "faces per frame, faces cache", "pose": "persons per frame, pose cache",
               "given": "per frame, sizes given"}[by_size["counter"]]
    table = Table(
        title=f"by group size (small: < {by_size['small_below']:g} {counted}; "
        f"{counts['unknown']} clip(s) without a size left out)"
    )
    table.add_column("model", no_wrap=True)
    for bucket in ("small", "large"):
        table.add_column(f"{bucket} (n={counts[bucket]}) acc %", justify="right")
        table.add_column("UAR %", justify="right", no_wrap=True)
    names = list(dict.fromkeys(n for bucket in by_size["buckets"].values() for n in bucket))
    for name in names:
        cells = []
        for bucket in ("small", "large"):
            entry = by_size["buckets"][bucket].get(name)
            cells += [percent(entry and entry["accuracy"]), percent(entry and entry["uar"])]
        table.add_row(name, *cells)
    return table
