"""Score tables: a model's per-clip class probabilities, keyed by clip id.

Training writes one ``scores/<model>.h5`` per model; fusion and evaluation
read them (:func:`load_tables`) and line them up by id, never by row order
(:func:`align`): a clip missing from a model's table (its extraction or training
failed) gets uniform probabilities (1/3 each) or a zero embedding for that
model, and is counted. The file::

    /ids         str   [N]      clip ids
    /splits      str   [N]      train / val / test
    /probs       f32   [N, 3]   class probabilities (gemo.labels.CLASSES order)
    /embeddings  f32   [N, D]   penultimate-layer embedding (optional)
    /oof         bool  [N]      True where the score is out-of-fold (cross-fitted)
    attrs: model, modality, features, classes (JSON), gemo_version, info (JSON)
"""

import json
from dataclasses import dataclass, field

import h5py
import numpy as np

import gemo
from gemo import artifacts
from gemo.errors import GemoError
from gemo.files import atomic_write
from gemo.labels import CLASSES, N_CLASSES


# A trained model's table says where its embeddings come from: from its final model, for
# every row, so that a fusion of embeddings fits and predicts in one space (docs/training.md).
ONE_ENCODER = "final model, every row"


@dataclass
class ScoreTable:
    model: str
    ids: np.ndarray
    splits: np.ndarray
    probs: np.ndarray
    oof: np.ndarray
    embeddings: np.ndarray | None = None
    attrs: dict = field(default_factory=dict)

    def __post_init__(self):
        self.ids = np.asarray(self.ids, dtype=str)
        self.splits = np.asarray(self.splits, dtype=str)
        self.probs = np.asarray(self.probs, dtype=np.float32)
        self.oof = np.asarray(self.oof, dtype=bool)
        n = len(self.ids)
        if len(set(self.ids.tolist())) != n:
            raise ValueError(f"{self.model}: duplicate clip ids in score table")
        if self.probs.shape != (n, N_CLASSES) or len(self.splits) != n or len(self.oof) != n:
            raise ValueError(f"{self.model}: score arrays do not match {n} ids")
        if self.embeddings is not None:
            self.embeddings = np.asarray(self.embeddings, dtype=np.float32)
            if len(self.embeddings) != n:
                raise ValueError(f"{self.model}: embeddings do not match {n} ids")

    def select(self, ids):
        """Rows for ``ids``, in that order; a clear error names missing ids."""
        position = {clip_id: row for row, clip_id in enumerate(self.ids.tolist())}
        missing = [clip_id for clip_id in ids if clip_id not in position]
        if missing:
            raise GemoError(
                f"model {self.model!r} has no scores for {len(missing)} clip(s), e.g. {missing[:3]}"
            )
        rows = np.array([position[clip_id] for clip_id in ids], dtype=int)
        return ScoreTable(
            self.model,
            self.ids[rows],
            self.splits[rows],
            self.probs[rows],
            self.oof[rows],
            None if self.embeddings is None else self.embeddings[rows],
            dict(self.attrs),
        )


def save_scores(path, table):
    """Write ``table`` to ``path`` atomically (a temp file renamed into place)."""
    atomic_write(path, lambda tmp: _write_table(tmp, table))


def _write_table(path, table):
    with h5py.File(path, "w") as f:
        f.create_dataset("ids", data=table.ids.astype(object), dtype=h5py.string_dtype())
        f.create_dataset("splits", data=table.splits.astype(object), dtype=h5py.string_dtype())
        f.create_dataset("probs", data=table.probs)
        f.create_dataset("oof", data=table.oof)
        if table.embeddings is not None:
            f.create_dataset("embeddings", data=table.embeddings)
        f.attrs["model"] = table.model
        f.attrs["classes"] = json.dumps(list(CLASSES))
        f.attrs["gemo_version"] = gemo.__version__
        f.attrs["info"] = json.dumps(table.attrs, sort_keys=True)


def load_scores(path):
    """Read a score table written by :func:`save_scores`."""
    with h5py.File(path, "r") as f:
        classes = json.loads(f.attrs["classes"])
        if classes != list(CLASSES):
            raise GemoError(f"{path}: classes {classes} differ from {list(CLASSES)}")
        return ScoreTable(
            str(f.attrs["model"]),
            f["ids"].asstr()[()],
            f["splits"].asstr()[()],
            f["probs"][()],
            f["oof"][()],
            f["embeddings"][()] if "embeddings" in f else None,
            json.loads(f.attrs["info"]),
        )


def load_tables(*, workspace, names):
    """``{name: ScoreTable}`` for ``names``; a clear error lists what is available."""
    return {name: load_scores(workspace.scores_path(name))
            for name in require_tables(workspace, names)}


def require_tables(workspace, names):
    """``names`` if each has a score table in ``workspace``; else an error listing those it has."""
    known = artifacts.names_of(workspace)
    unknown = [name for name in names if name not in known]
    if unknown:
        raise GemoError(f"no score table for {', '.join(unknown)}; available: "
                        f"{', '.join(known) or 'none (run `gemo train` first)'}")
    return names


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
