"""Run feature extractors over a dataset into resumable HDF5 caches.

Workers compute; this process is the only writer of each cache file. A clip
counts as done once its ``complete`` mark is flushed, so an interrupted run
loses at most the clips in flight, and the next run redoes only those.

>>> from gemo.extraction import extract
>>> reports = extract(workspace=Workspace("work"), dataset="vgaf/", sets=["frames"])  # doctest: +SKIP
"""

import ctypes
import multiprocessing
import os
import threading
import warnings
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import ExitStack
from dataclasses import dataclass, field
from multiprocessing import forkserver, get_context
from multiprocessing.connection import wait as wait_for
from pathlib import Path

from gemo import extractors, threads
from gemo.cache.store import CacheMismatch, FeatureCache, fingerprint_file, same_source
from gemo.data.index import index_dataset
from gemo.data.media import Media, MediaError
from gemo.device import resolve_device
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
            progress=True, executor="local", scheduler=None, device="auto", batch_size=0):
    """Extract ``sets`` (default frames, pyaudio, egemaps) for every clip of the dataset.

    ``dataset`` is indexed and remembered by the workspace; when None the
    remembered one is used. ``params`` maps a set name to its parameters,
    e.g. ``{"frames": {"count": 16}}``. Returns one :class:`SetReport` per set.

    Each clip is one task that computes every set it still lacks, decoding its
    video and audio once for all of them. ``device`` (auto, cpu, cuda) and
    ``batch_size`` (frames or faces per network call, 0: the set's default)
    apply to the sets that run networks (faces, fer).

    ``executor="dask"`` computes clips on a Dask distributed cluster: the one at
    ``scheduler`` (e.g. ``"tcp://10.0.0.5:8786"``), or a local cluster of
    ``workers`` processes started for this run. Results come back to this
    process, which stays the only writer of the caches (docs/distributed.md).
    """
    if executor not in ("local", "dask"):
        raise GemoError(f"unknown executor {executor!r}: choose local or dask")
    if scheduler is not None and executor != "dask":
        raise GemoError("a scheduler address needs the dask executor (--executor dask)")
    if batch_size < 0:
        raise GemoError(f"batch size must be >= 0 (0: each set's default), not {batch_size}")
    index = _index(workspace, dataset)
    sets = list(sets or DEFAULT_SETS)
    params = params or {}
    unknown = sorted(set(params) - set(sets))
    if unknown:
        raise GemoError(f"parameters given for set(s) not extracted: {', '.join(unknown)}")
    chosen = _in_dependency_order([
        extractors.create(name, device=device, batch_size=batch_size, **params.get(name, {}))
        for name in sets])
    if any(e.uses_device for e in chosen):
        resolve_device(device)  # a wrong --device stops the run here, not once per clip
    workers = workers or os.cpu_count() or 1
    pool = _DaskPool(workers, scheduler) if executor == "dask" else _Pool(workers, chosen)
    with ExitStack() as stack:
        stack.enter_context(pool)
        # Creating a cache computes its provenance (networks load, openSMILE names its
        # features): meanwhile the workers start and load theirs.
        caches = _open_caches(chosen, workspace, overwrite, stack,
                              before_creating=pool.start if index.clips else None)
        reports = {e.name: SetReport(e.name) for e in chosen}
        todo = {e.name: _todo(caches[e.name], index.clips, reports[e.name]) for e in chosen}
        tasks = [(clip, [e for e in chosen if clip.id in todo[e.name]]) for clip in index.clips]
        tasks = [(clip, wanted) for clip, wanted in tasks if wanted]
        label = ", ".join(e.name for e in chosen)
        with progress_bar(label, len(tasks), enabled=progress) as advance:
            failed = 0
            for clip, outcomes in pool.run(tasks, caches):
                failed += _store(clip, outcomes, caches, reports)
                del outcomes
                release_memory()
                advance(status=f"{failed} clip(s) with failures" if failed else "")
        for extractor in chosen:
            reports[extractor.name].failed = caches[extractor.name].failures()
    return [reports[e.name] for e in chosen]


def _store(clip, outcomes, caches, reports):
    """Write a clip's outcomes to their caches; True if any set failed on it."""
    any_failed = False
    for name, (status, fingerprint, payload) in outcomes.items():
        if status == "ok":
            caches[name].write(clip.id, payload, fingerprint=fingerprint, path=clip.path)
            reports[name].extracted += 1
        else:
            kind, message = payload
            caches[name].write_failure(clip.id, kind=kind, message=message,
                                       fingerprint=fingerprint)
            any_failed = True
    return any_failed


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


def _open_caches(chosen, workspace, overwrite, stack, before_creating=None):
    """Name -> open cache: a writer per chosen set, a reader per set they require besides.

    A set computed from another records the required cache's fingerprint among its
    parameters, so it is refused once that cache is rebuilt with other settings.
    ``before_creating`` is called before the first cache file is created.
    """
    caches = {}
    for extractor in chosen:
        for name in extractor.requires:
            if name in caches:
                continue
            path = workspace.cache_path(name)
            if not path.exists():
                raise GemoError(f"{extractor.name} needs the {name} feature set: extract it "
                                f"first (gemo extract --only {name},{extractor.name})")
            caches[name] = stack.enter_context(FeatureCache(path))
        path = workspace.cache_path(extractor.name)
        if overwrite and path.exists():
            path.unlink()
        if before_creating is not None and not path.exists():
            before_creating()
        provenance = extractor.provenance()
        provenance["params"].update(
            {f"upstream.{name}": caches[name].fingerprint() for name in extractor.requires})
        caches[extractor.name] = stack.enter_context(
            FeatureCache(path, mode="a", provenance=provenance))
    return caches


def _todo(cache, clips, report):
    """The clips ``cache`` still needs; counts the ones done in ``report.skipped``.

    A clip whose file changed since it was stored stops the run (CacheMismatch):
    its old features would be mixed with new ones.
    """
    todo, changed = set(), []
    for clip in clips:
        previous = cache.stored_fingerprint(clip.id)
        if previous is None or "sha256" not in previous:
            todo.add(clip.id)
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
            todo.add(clip.id)  # a failed clip whose file changed: try again
    if changed:
        raise CacheMismatch(
            f"{cache.path}: {len(changed)} clip(s) changed on disk since they were extracted, "
            f"e.g. {', '.join(changed[:5])}; use --overwrite to redo the cache"
        )
    return todo


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


def _prepare(wanted, caches, clip_id):
    """A task's extractors, with the arrays they need from caches (required, not computed here).

    Returns ``(runnable, inputs, failed)``: ``failed`` maps each set whose required
    arrays are missing to its failed outcome; ``runnable`` are the other sets.
    """
    computed = {e.name for e in wanted}
    inputs, failed = {}, {}
    for extractor in wanted:
        from_cache = {name: caches[name] for name in extractor.requires if name not in computed}
        try:
            inputs.update(upstream_inputs(from_cache, clip_id))
        except MediaError as error:
            failed[extractor.name] = ("failed", {}, (error.kind, str(error)))
    return [e for e in wanted if e.name not in failed], inputs, failed


def run_clip(chosen, path, inputs=None):
    """Run ``chosen`` extractors (in dependency order) on one clip; never raises for a bad clip.

    The file is fingerprinted once and decoded once for all of them. ``inputs``
    holds arrays of required sets that are not among ``chosen``. Returns
    ``{set: outcome}``, each ``("ok", fingerprint, arrays)`` or
    ``("failed", fingerprint, (kind, message))``.
    """
    try:
        fingerprint = fingerprint_file(path)
    except OSError as error:
        failed = ("failed", {}, ("unreadable", f"{type(error).__name__}: {error.strerror or error}"))
        return {extractor.name: failed for extractor in chosen}
    media = Media(path, frame_counts=[count for e in chosen for count in e.frame_counts()])
    outcomes = _run_all(chosen, media, inputs or {}, fingerprint)
    release_memory()  # the clip's decoded media is gone by now
    return outcomes


def _run_all(chosen, media, inputs, fingerprint):
    outcomes = {}
    for extractor in chosen:
        given = dict(inputs)
        upstream_failed = None
        for name in extractor.requires:
            if name in outcomes:
                status, _, payload = outcomes[name]
                if status != "ok":
                    upstream_failed = f"{name} failed for this clip ({payload[0]}: {payload[1]})"
                given[name] = payload
        if upstream_failed:
            outcomes[extractor.name] = ("failed", fingerprint, ("upstream", upstream_failed))
        else:
            outcomes[extractor.name] = _run_one(extractor, media, given, fingerprint)
    return outcomes


def _glibc():
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:  # not glibc (macOS, musl): nothing to trim
        return None


_LIBC = _glibc()


def release_memory():
    """Hand memory freed by the last clip back to the system (glibc's ``malloc_trim``).

    glibc keeps freed heap for reuse, and the varying buffer sizes of face
    detection fragment it: without this a worker grew from 0.75 to 1.05 GB over
    100 clips (0.77 GB with it); see docs/performance.md.
    """
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _run_one(extractor, media, inputs, fingerprint):
    try:
        return "ok", fingerprint, extractor.extract(media, inputs)
    except MediaError as error:
        return "failed", fingerprint, (error.kind, str(error))
    except MemoryError:
        return "failed", fingerprint, ("error", "out of memory")
    except Exception as error:  # a library failing on odd input must not stop the run
        return "failed", fingerprint, ("error", f"{type(error).__name__}: {error}")


def _crashed(wanted, message):
    return {e.name: ("failed", {}, ("crash", message)) for e in wanted}


_WORKER_EXTRACTORS = {}


def _init_worker(specs):
    """Pool worker set-up: one thread per library, exit when the parent dies, load the sets.

    A killed run must leave no orphans: the worker waits on its parent's sentinel, which
    closes when the parent dies, however it dies. Loading the extractors of ``specs`` now
    overlaps their imports with the main process's own set-up.
    """
    import gemo.worker_setup  # noqa: F401  (before torch; a no-op where the server did it)

    sentinel = multiprocessing.parent_process().sentinel

    def watch():
        wait_for([sentinel])
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()
    for extractor in _worker_extractors(specs):
        try:
            extractor.load()
        except Exception:  # noqa: BLE001  the same error is recorded per clip, where it is clear
            pass


def _worker_run(specs, path, inputs):
    """:func:`run_clip` in a worker; ``specs`` are ``(name, params, device, batch_size)``."""
    return run_clip(_worker_extractors(specs), path, inputs)


def _worker_extractors(specs):
    """This worker's extractor of each spec, built once and kept (networks load once)."""
    chosen = []
    for name, params, device, batch_size in specs:
        key = (name, tuple(sorted(params.items())), device, batch_size)
        if key not in _WORKER_EXTRACTORS:
            _WORKER_EXTRACTORS[key] = extractors.create(name, device=device,
                                                        batch_size=batch_size, **params)
        chosen.append(_WORKER_EXTRACTORS[key])
    return chosen


def _worker_context(modules):
    """How pool workers start: forked from a fork server that imported ``modules`` once.

    Importing torch, pyAudioAnalysis and openSMILE takes 7 s of one core; the server does it
    once for all workers, and for pools rebuilt after a worker died. Never a plain fork of
    this process, which may hold threads (progress bar) and open HDF5 files. Where there is
    no fork server (Windows), workers are spawned and import for themselves.
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return get_context("spawn")
    context = get_context("forkserver")
    # Effective when the server starts (the first pool of this process); later pools reuse it.
    context.set_forkserver_preload(["gemo.worker_setup", "gemo.extraction", *modules])
    return context


def _specs(wanted):
    return [(e.name, e.params, e.device, e.batch_size) for e in wanted]


class _Pool:
    """Runs clips in this process (1 worker) or in a process pool, yielding results as they finish.

    At most ``2 * workers`` clips are in flight, so memory does not grow with
    the dataset. A worker that dies (a decoder crash) breaks the pool: it is
    rebuilt, and the clips in flight are retried one at a time; a clip whose
    worker dies again is recorded as ``crash`` (see :class:`_TaskQueue`).
    """

    def __init__(self, workers, chosen=()):
        self.workers = workers
        self._specs = _specs(chosen)
        self._modules = [module for extractor in chosen for module in extractor.modules]
        self._networks = any(extractor.uses_device for extractor in chosen)  # need torch
        self._executor = None

    def __enter__(self):
        return self

    def start(self):
        """Start the worker processes now (else on the first clip); they load the sets.

        With a fork server it returns at once: a worker's start waits for the server's
        imports, which overlap with this process's own work meanwhile. Workers spawned
        or forked from this process start before it returns, before any cache is open.
        """
        if self.workers > 1 and self._executor is None:
            context = _worker_context(self._modules)
            self._executor = executor = ProcessPoolExecutor(
                self.workers, mp_context=context, initializer=_init_worker,
                initargs=(self._specs,))

            def launch():
                try:
                    for _ in range(self.workers):
                        executor.submit(int)  # each task starts at most one worker (not fork)
                except Exception:  # noqa: BLE001, S110  a pool that cannot start: run() meets it
                    pass

            if context.get_start_method() == "forkserver":
                # Start the server now, before any cache is open: a process started while
                # this one holds a locked HDF5 file keeps the lock until it execs. Workers
                # fork from the server later, in the background; it holds no such file.
                forkserver.ensure_running()
                threading.Thread(target=launch, daemon=True).start()
            else:
                launch()

    def __exit__(self, exc_type, *rest):
        if self._executor is not None:
            # On Ctrl-C, do not wait for queued clips: their results would be thrown away.
            self._executor.shutdown(wait=exc_type is None, cancel_futures=True)

    def run(self, tasks, caches):
        """Yield ``(clip, {set: outcome})`` for ``tasks`` of ``(clip, extractors)``.

        Arrays the extractors require from ``caches`` are read here, in the writer.
        """
        if self.workers <= 1:
            # The sets run in this process: at gemo's thread count, not one thread per core.
            with threads.limited(torch=self._networks):
                for clip, wanted in tasks:
                    rest, given, failed = _prepare(wanted, caches, clip.id)
                    yield clip, {**failed, **(run_clip(rest, clip.path, given) if rest else {})}
            return
        queue = _TaskQueue(tasks, caches, limit=2 * self.workers)
        in_flight = {}
        while queue or in_flight:
            self.start()
            ready, upstream_failed = queue.next(len(in_flight))
            yield from upstream_failed
            broken = False
            for index, task in enumerate(ready):
                clip, rest, given, _ = task
                try:
                    future = self._executor.submit(_worker_run, _specs(rest), clip.path, given)
                except BrokenProcessPool:  # a worker died since the last results came in
                    queue.put_back(ready[index:])
                    broken = True
                    break
                in_flight[future] = task
            died = []
            if in_flight:
                finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in finished:
                    task = in_flight.pop(future)
                    try:
                        yield task[0], {**task[3], **future.result()}
                    except BrokenProcessPool:
                        died.append(task)
            if died or broken:  # the pool is broken: every clip in flight went down with it
                died += in_flight.values()
                in_flight.clear()
                self._executor.shutdown(wait=False, cancel_futures=True)
                self._executor = None
                for task in died:
                    crashed = queue.died(task, "the worker process died on this clip")
                    if crashed:
                        yield crashed


class _TaskQueue:
    """Clips waiting for a worker, and what to do with a clip whose worker died.

    A dying worker takes down the clips beside it, so a clip in flight at a death
    is not yet to blame: it is retried once, alone, when the clips in flight have
    finished. If its worker dies again, it is recorded as ``crash``.
    """

    def __init__(self, tasks, caches, *, limit):
        self._pending = list(reversed(tasks))
        self._returned = []  # prepared tasks that could not be submitted
        self._suspects = []
        self._retried = set()
        self._caches = caches
        self._limit = limit

    def __bool__(self):
        return bool(self._pending or self._returned or self._suspects)

    def next(self, in_flight):
        """What to do with ``in_flight`` clips running: ``(ready, upstream_failed)``.

        ``ready`` are tasks ``(clip, extractors, inputs, failed)`` to submit;
        ``upstream_failed`` are ``(clip, outcomes)`` of clips left with nothing to run.
        """
        if self._suspects:
            return ([] if in_flight else [self._suspects.pop()]), []
        room = self._limit - in_flight
        ready, self._returned = self._returned[:room], self._returned[room:]
        upstream_failed = []
        while self._pending and in_flight + len(ready) < self._limit:
            clip, wanted = self._pending.pop()
            rest, given, failed = _prepare(wanted, self._caches, clip.id)
            if rest:
                ready.append((clip, rest, given, failed))
            else:
                upstream_failed.append((clip, failed))
        return ready, upstream_failed

    def put_back(self, tasks):
        """Prepared tasks that were not submitted after all: they go first next time."""
        self._returned = list(tasks) + self._returned

    def died(self, task, message):
        """None if ``task`` will be retried alone, else its ``(clip, outcomes)`` as crashed."""
        clip, rest, _, failed = task
        if clip.id in self._retried:
            return clip, {**failed, **_crashed(rest, message)}
        self._retried.add(clip.id)
        self._suspects.append(task)
        return None


class _DaskPool:
    """Runs clips on a Dask distributed cluster with the contract of :class:`_Pool`.

    Workers compute :func:`_worker_run`; results come back here, so this process
    stays the only writer. At most ``2 * threads`` of the cluster are in flight.
    A clip whose worker dies is retried once, alone, then recorded as ``crash``.
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

    def start(self):
        """Workers are started (or found) by :meth:`__enter__`."""

    def _limit(self):
        return max(2, 2 * sum(self._client.nthreads().values()))

    def run(self, tasks, caches):
        """Yield ``(clip, {set: outcome})`` for ``tasks``, as :meth:`_Pool.run`."""
        from concurrent.futures import CancelledError  # dask's FutureCancelledError is one

        from distributed import as_completed
        from distributed.scheduler import KilledWorker

        queue = _TaskQueue(tasks, caches, limit=self._limit())  # one round trip to the scheduler
        in_flight = {}
        finished = as_completed(loop=self._client.loop)  # not the default client's loop
        try:
            while queue or in_flight:
                ready, upstream_failed = queue.next(len(in_flight))
                yield from upstream_failed
                for task in ready:
                    clip, rest, given, _ = task
                    future = self._client.submit(_worker_run, _specs(rest), clip.path, given,
                                                 pure=False)
                    in_flight[future.key] = future, task
                    finished.add(future)
                if not in_flight:
                    continue
                future, task = in_flight.pop(next(finished).key)
                try:
                    outcome = task[0], {**task[3], **future.result()}
                except (KilledWorker, CancelledError) as error:
                    message = f"the dask worker died on this clip ({type(error).__name__})"
                    outcome = queue.died(task, message)
                except ModuleNotFoundError as error:  # run_clip catches the extractors' errors
                    raise GemoError(f"a dask worker cannot import {error.name}: the workers need "
                                    f"gemo installed (see docs/distributed.md)") from None
                future.release()
                if outcome is not None:
                    yield outcome
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
