"""Where things live inside a workdir.

A workspace holds every stage's output and remembers the indexed dataset, so
later commands need no dataset path::

    gemo-work/
      dataset.json          the clip index (id, path, split, label, group)
      cache/<set>.h5        one file per feature set
      models/<name>/        checkpoints and training logs
      scores/<name>.h5      per-clip class probabilities of each model
      reports/<split>/      metrics and plots

Asking for a path never creates anything: a command that only reads (``gemo
info``, a mistyped ``--workdir``) leaves no folder behind. Writers create the
folders they write into (``create=True``, or the writing function does).
"""

import json
import os
import warnings
from pathlib import Path

from gemo.errors import GemoError
from gemo.files import write_json

DEFAULT_WORKDIR = "gemo-work"


class NoDataset(GemoError, FileNotFoundError):
    """The workspace does not exist or has indexed no dataset yet."""


class Workspace:
    """A workdir. ``Workspace()`` uses ``$GEMO_WORKDIR`` or ``./gemo-work``."""

    def __init__(self, root=None):
        root = root or os.environ.get("GEMO_WORKDIR") or DEFAULT_WORKDIR
        self.root = Path(root).expanduser().resolve()

    def __repr__(self):
        return f"Workspace({str(self.root)!r})"

    def _dir(self, name, create):
        path = self.root / name
        if create:
            path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def cache_dir(self):
        return self.root / "cache"

    @property
    def models_dir(self):
        return self.root / "models"

    @property
    def scores_dir(self):
        return self.root / "scores"

    def reports_dir(self, split, *, create=False):
        return self._dir(Path("reports") / split, create)

    def cache_path(self, feature_set):
        return self.cache_dir / f"{feature_set}.h5"

    def model_dir(self, name, *, create=False):
        return self._dir(Path("models") / name, create)

    def scores_path(self, name):
        return self.scores_dir / f"{name}.h5"

    @property
    def index_path(self):
        return self.root / "dataset.json"

    def save_index(self, index):
        """Remember ``index`` (a :class:`gemo.data.index.DatasetIndex`)."""
        write_json(self.index_path, index.to_dict())

    def use_dataset(self, dataset=None):
        """Index ``dataset`` (a VGAF folder or a CSV manifest) and remember it; its index.

        None: the remembered one. A dataset other than the one this workspace's caches
        were extracted from is refused: their clips would be mixed.
        """
        if dataset is None:
            if not self.index_path.exists():
                raise GemoError(f"no dataset remembered in {self.root}: name it, `gemo extract "
                                "DATASET` (a VGAF folder or a CSV manifest), or pass --workdir to "
                                "the workspace you used")
            return self.load_index()
        from gemo.data.index import index_dataset
        from gemo.progress import console

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            index = index_dataset(dataset)
        for warning in caught:
            console.print(f"[yellow]warning:[/] {warning.message}")
        if self.index_path.exists():
            previous = self.load_index()
            if previous.root != index.root and any(self.cache_dir.glob("*.h5")):
                raise GemoError(
                    f"{self.root} holds caches of {previous.root}; "
                    f"use another --workdir for {index.root}"
                )
        self.save_index(index)
        return index

    def load_index(self):
        """The remembered dataset index; :class:`NoDataset` says what to run when there is none."""
        from gemo.data.index import DatasetIndex

        if not self.index_path.exists():
            what = "no dataset indexed in" if self.root.is_dir() else "no workspace at"
            raise NoDataset(
                f"{what} {self.root}: run `gemo extract DATASET` first "
                "(or pass --workdir to the workspace you used)"
            )
        return DatasetIndex.from_dict(json.loads(self.index_path.read_text()))
