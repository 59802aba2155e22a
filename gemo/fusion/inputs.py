"""Finding score tables and lining them up by clip id.

Rows are always matched by clip id, never by position. A clip missing from a
model's table (its extraction or training failed) gets uniform probabilities
(1/3 each) or a zero embedding for that model, and is counted.

>>> tables = load_tables(workspace=Workspace("w"), names=["audio-pyaudio"])   # doctest: +SKIP
>>> X, missing = align(tables, ["1_1", "1_2"])                                  # doctest: +SKIP
>>> X.shape, missing.shape                                                      # doctest: +SKIP
((2, 3), (2, 1))
"""

import numpy as np

from gemo import artifacts
from gemo.errors import GemoError
from gemo.labels import N_CLASSES
from gemo.scores import load_scores


def load_tables(*, workspace, names):
    """``{name: ScoreTable}`` for ``names``; a clear error lists what is available."""
    known = artifacts.names_of(workspace)
    unknown = [name for name in names if name not in known]
    if unknown:
        raise GemoError(f"no score table for {', '.join(unknown)}; available: "
                        f"{', '.join(known) or 'none (run `gemo train` first)'}")
    return {name: load_scores(workspace.scores_path(name)) for name in names}


def align(tables, ids, *, field="probs", splits=None):
    """Concatenate each table's ``field`` for ``ids``, model after model.

    Returns ``(X, missing)``: ``X`` is ``[len(ids), sum of widths]``, and
    ``missing[i, m]`` is True where model ``m`` had no row for ``ids[i]``
    (filled with 1/3 for probabilities, 0 for embeddings). With ``splits``
    (the index's split of each id), a table placing a clip in another split is
    an error: its scores were made for another dataset index.
    """
    ids = list(ids)
    blocks, missing = [], np.zeros((len(ids), len(tables)), dtype=bool)
    for m, (name, table) in enumerate(tables.items()):
        values = table.probs if field == "probs" else table.embeddings
        if values is None:
            raise GemoError(
                f"score table {name!r} has no {field}; fusing {field} needs every model to store them"
            )
        fill = 1.0 / N_CLASSES if field == "probs" else 0.0
        block = np.full((len(ids), values.shape[1]), fill, dtype=np.float64)
        position = {clip_id: row for row, clip_id in enumerate(table.ids.tolist())}
        for i, clip_id in enumerate(ids):
            row = position.get(clip_id)
            if row is None:
                missing[i, m] = True
                continue
            if splits is not None and table.splits[row] != splits[i]:
                raise GemoError(
                    f"score table {name!r} puts clip {clip_id!r} in {table.splits[row]!r} but the "
                    f"dataset index says {splits[i]!r}: the table is stale, retrain {name}"
                )
            block[i] = values[row]
        blocks.append(block)
    return np.hstack(blocks), missing


def oof_flags(table, ids):
    """``oof`` of ``table`` for ``ids`` (True where the table has no row, i.e. imputed)."""
    position = {clip_id: row for row, clip_id in enumerate(table.ids.tolist())}
    return np.array([bool(table.oof[position[i]]) if i in position else True for i in ids])
