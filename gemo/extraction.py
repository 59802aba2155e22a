"""Run feature extractors over a dataset into resumable HDF5 caches.

Workers compute; this process is the only writer of each cache file. A clip
counts as done once its ``complete`` mark is flushed, so an interrupted run
loses at most the clips in flight, and the next run redoes only those.

>>> from gemo.extraction import extract
>>> reports = extract(workspace=Workspace("work"), dataset="vgaf/", sets=["frames"])  # doctest: +SKIP
"""

import os
import threading
import time
import warnings
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

from gemo import extractors
from gemo.cache.store import CacheMismatch, FeatureCache, fingerprint_file, same_source
from gemo.data.index import index_dataset
from gemo.data.media import MediaError
from gemo.errors import GemoError
from gemo.progress import progress_bar

DEFAULT_SETS = ("frames", "pyaudio", "egemaps")


@dataclass
class SetReport:
    """What one feature set's run did."""

    feature_set: str
    extracted: int = 0
    skipped: int = 0  # done in an earlier run
    failed: dict = field(default_factory=dict)  # id -> {"kind", "message"}, all failures in the cache


def extract(*, workspace, dataset=None, sets=None, params=None, workers=None, overwrite=False,
            progress=True, executor="local", scheduler=None):
    """Extract ``sets`` (default frames, pyaudio, egemaps) for every clip of the dataset.

    ``dataset`` is indexed and remembered by the workspace; when None the
    remembered one is used. ``params`` maps a set name to its parameters,
    e.g. ``{"frames": {"count": 16}}``. Returns one :class:`SetReport` per set.

    ``executor="dask"`` computes clips on a Dask distributed cluster: the one at
    ``scheduler`` (e.g. ``"tcp://10.0.0.5:8786"``), or a local cluster of
    ``workers`` processes started for this run. Results come back to this
    process, which stays the only writer of the caches (docs/distributed.md).
    """
    if executor not in ("local", "dask"):
        raise GemoError(f"unknown executor {executor!r}: choose local or dask")
    if scheduler is not None and executor != "dask":
        raise GemoError("a scheduler address needs the dask executor (--executor dask)")
    index = _index(workspace, dataset)
    sets = list(sets or DEFAULT_SETS)
    params = params or {}
    unknown = sorted(set(params) - set(sets))
    if unknown:
        raise GemoError(f"parameters given for set(s) not extracted: {', '.join(unknown)}")
    chosen = _in_dependency_order([extractors.create(name, **params.get(name, {})) for name in sets])
    workers = workers or os.cpu_count() or 1
    reports = []
    pool = _DaskPool(workers, scheduler) if executor == "dask" else _Pool(workers)
    with pool:
        for extractor in chosen:
            reports.append(_extract_set(extractor, index, workspace, pool, overwrite, progress))
    return reports


def _in_dependency_order(chosen):
    """Sets that others require come first (e.g. faces before fer)."""
    names = {extractor.name for extractor in chosen}
    ordered, placed = [], set()
    while len(ordered) < len(chosen):
        ready = [e for e in chosen if e.name not in placed
                 and all(r in placed or r not in names for r in e.requires)]
        if not ready:
            raise GemoError(f"circular requirements among {', '.join(sorted(names))}")
        ordered += ready
        placed.update(e.name for e in ready)
    return ordered


def _upstream(extractor, workspace):
    """Open the caches ``extractor`` requires; their fingerprints join its provenance."""
    caches = {}
    for name in extractor.requires:
        path = workspace.cache_path(name)
        if not path.exists():
            raise GemoError(f"{extractor.name} needs the {name} feature set: extract it first "
                            f"(gemo extract --only {name},{extractor.name})")
        caches[name] = FeatureCache(path)
    return caches


def _index(workspace, dataset):
    if dataset is None:
        return workspace.load_index()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        index = index_dataset(dataset)
    for warning in caught:
        from gemo.progress import console

        console.print(f"[yellow]warning:[/] {warning.message}")
    if workspace.index_path.exists():
        previous = workspace.load_index()
        if previous.root != index.root and any(workspace.cache_dir.glob("*.h5")):
            raise GemoError(
                f"{workspace.root} holds caches of {previous.root}; "
                f"use another --workdir for {index.root}"
            )
    workspace.save_index(index)
    return index


def _extract_set(extractor, index, workspace, pool, overwrite, progress):
    path = workspace.cache_path(extractor.name)
    report = SetReport(extractor.name)
    if overwrite and path.exists():
        path.unlink()
    upstream = _upstream(extractor, workspace)
    provenance = extractor.provenance()
    provenance["params"].update({f"upstream.{n}": c.fingerprint() for n, c in upstream.items()})
    try:
        _fill(extractor, index, path, provenance, upstream, pool, report, progress)
    finally:
        for cache in upstream.values():
            cache.close()
    return report


def _fill(extractor, index, path, provenance, upstream, pool, report, progress):
    with FeatureCache(path, mode="a", provenance=provenance) as cache:
        todo, changed = [], []
        for clip in index.clips:
            previous = cache.stored_fingerprint(clip.id)
            if previous is None or "sha256" not in previous:
                todo.append(clip)
                continue
            try:
                current = fingerprint_file(clip.path, previous=previous)
            except OSError:
                current = None
            if same_source(previous, current):
                report.skipped += clip.id in cache
            elif clip.id in cache:
                changed.append(clip.id)
            else:
                todo.append(clip)  # a failed clip whose file changed: try again
        if changed:
            raise CacheMismatch(
                f"{path}: {len(changed)} clip(s) changed on disk since they were extracted, "
                f"e.g. {', '.join(changed[:5])}; use --overwrite to redo the cache"
            )
        with progress_bar(extractor.name, len(todo), enabled=progress) as advance:
            for clip, outcome in pool.run(extractor, todo, upstream):
                status, fingerprint, payload = outcome
                if status == "ok":
                    cache.write(clip.id, payload, fingerprint=fingerprint, path=clip.path)
                    report.extracted += 1
                else:
                    kind, message = payload
                    cache.write_failure(clip.id, kind=kind, message=message, fingerprint=fingerprint)
                advance(status=f"failed {len(cache.failures())}" if status != "ok" else "")
        report.failed = cache.failures()


def upstream_inputs(upstream, clip_id):
    """The clip's arrays from each required cache, or a MediaError saying what is missing."""
    inputs = {}
    for name, cache in upstream.items():
        if clip_id not in cache:
            failure = cache.failures().get(clip_id)
            reason = f"{failure['kind']}: {failure['message']}" if failure else "not extracted"
            raise MediaError("upstream", f"{name} failed for this clip ({reason})")
        inputs[name] = cache.read(clip_id)
    return inputs


def _inputs_or_failure(upstream, clip):
    """``(inputs, None)``, or ``(None, failed outcome)`` when a required set lacks the clip."""
    try:
        return upstream_inputs(upstream, clip.id), None
    except MediaError as error:
        return None, ("failed", {}, (error.kind, str(error)))


def run_one(extractor, path, inputs=None):
    """Fingerprint and extract one clip; never raises for a bad clip.

    Returns ``("ok", fingerprint, arrays)`` or ``("failed", fingerprint, (kind, message))``.
    ``inputs`` are the required sets' arrays for extractors with ``requires``.
    """
    try:
        fingerprint = fingerprint_file(path)
    except OSError as error:
        return "failed", {}, ("unreadable", f"{type(error).__name__}: {error.strerror or error}")
    try:
        if extractor.requires:
            return "ok", fingerprint, extractor.extract(path, inputs)
        return "ok", fingerprint, extractor.extract(path)
    except MediaError as error:
        return "failed", fingerprint, (error.kind, str(error))
    except MemoryError:
        return "failed", fingerprint, ("error", "out of memory")
    except Exception as error:  # a library failing on odd input must not stop the run
        return "failed", fingerprint, ("error", f"{type(error).__name__}: {error}")


_WORKER_EXTRACTORS = {}


def _watch_parent(parent):
    """Worker initializer: exit when the parent dies (a killed run must leave no orphans)."""

    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _worker_run(name, params, path, inputs):
    key = (name, tuple(sorted(params.items())))
    extractor = _WORKER_EXTRACTORS.get(key)
    if extractor is None:
        extractor = _WORKER_EXTRACTORS[key] = extractors.create(name, **params)
    return run_one(extractor, path, inputs)


class _Pool:
    """Runs clips in this process (1 worker) or in a process pool, yielding results as they finish.

    At most ``2 * workers`` clips are in flight, so memory does not grow with
    the dataset. A worker that dies (a decoder crash) breaks the pool: it is
    rebuilt and the clips in flight are retried once, then recorded as ``crash``.
    """

    def __init__(self, workers):
        self.workers = workers
        self._executor = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *rest):
        if self._executor is not None:
            # On Ctrl-C, do not wait for queued clips: their results would be thrown away.
            self._executor.shutdown(wait=exc_type is None, cancel_futures=True)

    def _make(self):
        # spawn, not fork: the parent may hold threads (progress bar) and library state.
        return ProcessPoolExecutor(self.workers, mp_context=get_context("spawn"),
                                   initializer=_watch_parent, initargs=(os.getpid(),))

    def run(self, extractor, clips, upstream):
        """Yield ``(clip, outcome)`` of :func:`run_one`; this process reads ``upstream`` caches."""

        if self.workers <= 1:
            for clip in clips:
                given, failed = _inputs_or_failure(upstream, clip)
                yield clip, failed or run_one(extractor, clip.path, given)
            return
        pending = list(reversed(clips))
        attempts = {}
        in_flight = {}
        while pending or in_flight:
            if self._executor is None:
                self._executor = self._make()
            while pending and len(in_flight) < 2 * self.workers:
                clip = pending.pop()
                given, failed = _inputs_or_failure(upstream, clip)
                if failed:
                    yield clip, failed
                    continue
                attempts[clip.id] = attempts.get(clip.id, 0) + 1
                future = self._executor.submit(
                    _worker_run, extractor.name, extractor.params, clip.path, given
                )
                in_flight[future] = clip
            finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            broken = []
            for future in finished:
                clip = in_flight.pop(future)
                try:
                    yield clip, future.result()
                except BrokenProcessPool:
                    broken.append(clip)
            if broken:
                broken.extend(in_flight.values())
                in_flight.clear()
                self._executor.shutdown(wait=False, cancel_futures=True)
                self._executor = None
                for clip in broken:
                    if attempts[clip.id] >= 2:
                        yield clip, ("failed", {}, ("crash", "the worker process died on this clip"))
                    else:
                        pending.append(clip)


class _DaskPool:
    """Runs clips on a Dask distributed cluster with the contract of :class:`_Pool`.

    Workers compute :func:`_worker_run`; results come back here, so this process
    stays the only writer. At most ``2 * threads`` of the cluster are in flight.
    A clip whose worker dies is retried once, then recorded as ``crash``.
    ``scheduler`` None starts (and closes) a local cluster of ``workers`` processes.
    """

    def __init__(self, workers, scheduler=None):
        self.workers = workers
        self.scheduler = scheduler
        self._client = None
        self._cluster = None

    def __enter__(self):
        try:
            import dask
            from distributed import Client, LocalCluster
        except ImportError as error:
            raise GemoError(
                f"the dask executor needs Dask distributed ({error}): pip install 'gemo[dask]'"
            ) from None
        if self.scheduler is None:
            # The scheduler gives up on a task at the first worker death; run() retries it once.
            with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
                self._cluster = LocalCluster(n_workers=self.workers, threads_per_worker=1,
                                             processes=True, host="127.0.0.1",
                                             dashboard_address=None)
            self._client = Client(self._cluster)
        else:
            try:
                self._client = Client(self.scheduler)
            except (OSError, TimeoutError, ValueError) as error:
                raise GemoError(
                    f"cannot reach the Dask scheduler at {self.scheduler}: {error} "
                    f"(is `dask scheduler` running there and the address right?)"
                ) from None
        return self

    def __exit__(self, *exc):
        if self._client is not None:
            self._client.close()
        if self._cluster is not None:
            self._cluster.close()
        self._client = self._cluster = None

    def _limit(self):
        return max(2, 2 * sum(self._client.nthreads().values()))

    def run(self, extractor, clips, upstream):
        """Yield ``(clip, outcome)`` of :func:`run_one`; this process reads ``upstream`` caches."""
        from concurrent.futures import CancelledError  # dask's FutureCancelledError is one

        from distributed import as_completed
        from distributed.scheduler import KilledWorker

        pending = list(reversed(clips))
        attempts = {}
        in_flight = {}
        finished = as_completed(loop=self._client.loop)  # not the default client's loop

        limit = self._limit()  # asked once: nthreads() is a round trip to the scheduler

        def refill():
            failed_now = []
            while pending and len(in_flight) < limit:
                clip = pending.pop()
                given, failed = _inputs_or_failure(upstream, clip)
                if failed:
                    failed_now.append((clip, failed))
                    continue
                attempts[clip.id] = attempts.get(clip.id, 0) + 1
                future = self._client.submit(_worker_run, extractor.name, extractor.params,
                                             clip.path, given, pure=False)
                in_flight[future.key] = future, clip
                finished.add(future)
            return failed_now

        try:
            yield from refill()
            while in_flight:
                future = next(finished)
                future, clip = in_flight.pop(future.key)
                try:
                    outcome = future.result()
                except (KilledWorker, CancelledError) as error:
                    if attempts[clip.id] >= 2:
                        message = f"the dask worker died on this clip ({type(error).__name__})"
                        outcome = ("failed", {}, ("crash", message))
                    else:
                        pending.append(clip)
                        outcome = None
                except ModuleNotFoundError as error:  # run_one catches the extractors' errors
                    raise GemoError(f"a dask worker cannot import {error.name}: the workers need "
                                    f"gemo installed (see docs/distributed.md)") from None
                future.release()
                if outcome is not None:
                    yield clip, outcome
                yield from refill()
        finally:
            # Stopped early (Ctrl-C, an error writing): do not leave clips computing for nothing.
            finished.clear()
            if in_flight:
                self._client.cancel([future for future, _ in in_flight.values()])


def cache_summary(workspace):
    """Per cache file: set name, clips done, failures, parameters, size on disk."""
    rows = []
    for path in sorted(Path(workspace.cache_dir).glob("*.h5")):
        with FeatureCache(path) as cache:
            provenance = cache.provenance
            rows.append(
                {
                    "feature_set": provenance["feature_set"],
                    "path": str(path),
                    "done": len(cache.ids()),
                    "failed": cache.failures(),
                    "params": provenance["params"],
                    "extractor_version": provenance["extractor_version"],
                    "libraries": provenance["libraries"],
                    "gemo_version": provenance["gemo_version"],
                    "size_bytes": path.stat().st_size,
                }
            )
    return rows
