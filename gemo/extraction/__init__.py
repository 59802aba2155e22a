"""Run feature extractors over a dataset into resumable HDF5 caches.

- ``runner``: :func:`extract`, which clips each set still needs, storing what comes back
- ``clip``: one clip's :class:`Task` and each set's :class:`Outcome` (:func:`run_clip`)
- ``executors``: where clips run: this process, a local process pool, a Dask cluster
- ``workers``: how worker processes start, and what runs inside them
- ``report``: what the caches hold (:func:`cache_summary`, for ``gemo info``)

>>> from gemo.extraction import extract
>>> reports = extract(workspace=Workspace("work"), dataset="vgaf/", sets=["frames"])  # doctest: +SKIP
"""

from gemo.extraction.clip import Outcome, Task, run_clip
from gemo.extraction.report import cache_summary
from gemo.extraction.runner import SetReport, extract

__all__ = ["Outcome", "SetReport", "Task", "cache_summary", "extract", "run_clip"]
