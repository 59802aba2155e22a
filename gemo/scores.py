"""Score tables: a model's per-clip class probabilities, keyed by clip id.

Training writes one ``scores/<model>.h5`` per model; fusion and evaluation
read them and line them up by id, never by row order::

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
from gemo.errors import GemoError
from gemo.files import atomic_write
from gemo.labels import CLASSES, N_CLASSES


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
