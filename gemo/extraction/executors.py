"""Where clips are computed, registered by name: ``local`` (this process, or a pool of
processes on this machine) and ``dask`` (a Dask distributed cluster).

Each executor is built as ``cls(workers=N, chosen=extractors, scheduler=address)``
and is a context manager with ``start()`` (start workers early, so they load their
sets while this process opens caches) and ``run(tasks, caches)``, which yields
``(clip, {set: Outcome})`` as clips finish. Arrays required from caches are
read here, in the writer; outcomes come back here, so this process stays the only
writer of the caches. A clip whose worker dies is retried once, alone, then
recorded as ``crash`` (:class:`TaskQueue`).
"""

import threading
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from gemo import threads
from gemo.errors import GemoError
from gemo.extraction import workers as worker
from gemo.extraction.clip import run_task
from gemo.registry import Registry

EXECUTORS = Registry("executor")
register, available, get = EXECUTORS.register, EXECUTORS.available, EXECUTORS.get


@register
class LocalPool:
    """Runs clips in a pool of ``workers`` processes on this machine; with one worker,
    one after another in this process.

    At most ``2 * workers`` clips are in flight, so memory does not grow with the
    dataset. A worker that dies (a decoder crash) breaks the pool: it is rebuilt,
    and the clips in flight are retried one at a time.
    """

    name = "local"

    def __init__(self, *, workers, chosen, scheduler=None):
        if scheduler is not None:
            raise GemoError("a scheduler address needs the dask executor (--executor dask)")
        self.size = workers
        self._specs = worker.specs_of(chosen)
        self._modules = [module for extractor in chosen for module in extractor.modules]
        self._networks = any(extractor.uses_device for extractor in chosen)  # they need torch
        self._executor = None

    @staticmethod
    def warm_up(*, workers, modules):
        """Start the fork server now, importing ``modules``, when a pool of ``workers`` will
        fork from it: before this process builds its extractors and opens caches.

        The server's imports (torch, openSMILE, pyAudioAnalysis: seconds of one core) then
        run beside this process's own set-up, not after it; :meth:`start` forks the
        workers from it later.
        """
        if workers > 1:
            worker.started_pool_context(modules)

    def __enter__(self):
        return self

    def start(self):
        """Start the worker processes now (else on the first clip); they load the sets.

        With a fork server it returns at once: a worker's start waits for the server's
        imports, which overlap with this process's own work meanwhile. Workers spawned
        or forked from this process start before it returns, before any cache is open.
        """
        if self._executor is not None or self.size <= 1:
            return
        context = worker.pool_context(self._modules)
        self._executor = executor = ProcessPoolExecutor(
            self.size, mp_context=context, initializer=worker.init_worker,
            initargs=(self._specs,))

        def launch():
            try:
                for _ in range(self.size):
                    executor.submit(int)  # each task starts at most one worker (not fork)
            except Exception:  # noqa: BLE001, S110  a pool that cannot start: run() meets it
                pass

        if context.get_start_method() == "forkserver":
            # Start the server now, before any cache is open: a process started while
            # this one holds a locked HDF5 file keeps the lock until it execs. Workers
            # fork from the server later, in the background; it holds no such file.
            worker.start_fork_server()
            threading.Thread(target=launch, daemon=True).start()
        else:
            launch()

    def __exit__(self, exc_type, *rest):
        if self._executor is not None:
            # On Ctrl-C, do not wait for queued clips: their results would be thrown away.
            self._executor.shutdown(wait=exc_type is None, cancel_futures=True)

    def run(self, tasks, caches):
        if self.size <= 1:  # no pool: nothing to start, nothing to pickle
            # The sets run in this process: at gemo's thread count, not one thread per core.
            with threads.limited(torch=self._networks):
                for task in tasks:
                    yield task.clip, run_task(task.prepare(caches))
            return
        queue = TaskQueue(tasks, caches, limit=2 * self.size)
        in_flight = {}
        while queue or in_flight:
            self.start()
            ready, upstream_failed = queue.next(len(in_flight))
            yield from upstream_failed
            broken = False
            for index, task in enumerate(ready):
                try:
                    future = self._executor.submit(worker.run_in_worker,
                                                   worker.specs_of(task.extractors),
                                                   task.clip.path, task.inputs)
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
                        yield task.clip, {**task.failed, **future.result()}
                    except BrokenProcessPool:
                        died.append(task)
            if died or broken:  # the pool is broken: every clip in flight went down with it
                died += in_flight.values()
                in_flight.clear()
                death = self._stop_broken()
                message = "the worker process died on this clip" + (f" ({death})" if death else "")
                for task in died:
                    crashed = queue.died(task, message)
                    if crashed:
                        yield crashed

    def _stop_broken(self):
        """Shut the broken pool down and say how its worker died (see :func:`how_they_died`)."""
        processes = list(self._executor._processes.values())  # its only record of them
        # Not wait=True: on Python 3.11 the pool's own thread can hang for good joining a
        # broken pool (CPython gh-94777); the exit codes are awaited here, for a bounded time.
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._executor = None
        return worker.how_they_died(worker.exit_codes(processes))


class TaskQueue:
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

        ``ready`` are prepared tasks to submit; ``upstream_failed`` are
        ``(clip, outcomes)`` of clips left with nothing to run.
        """
        if self._suspects:
            return ([] if in_flight else [self._suspects.pop()]), []
        room = self._limit - in_flight
        ready, self._returned = self._returned[:room], self._returned[room:]
        upstream_failed = []
        while self._pending and in_flight + len(ready) < self._limit:
            task = self._pending.pop().prepare(self._caches)
            if task.extractors:
                ready.append(task)
            else:
                upstream_failed.append((task.clip, task.failed))
        return ready, upstream_failed

    def put_back(self, tasks):
        """Prepared tasks that were not submitted after all: they go first next time."""
        self._returned = list(tasks) + self._returned

    def died(self, task, message):
        """None if ``task`` will be retried alone, else its ``(clip, outcomes)`` as crashed."""
        if task.clip.id in self._retried:
            return task.clip, task.crashed(message)
        self._retried.add(task.clip.id)
        self._suspects.append(task)
        return None


@register
class DaskPool:
    """Runs clips on a Dask distributed cluster, as :class:`LocalPool` does locally.

    Workers compute :func:`gemo.extraction.workers.run_in_worker`. At most
    ``2 * threads`` of the cluster are in flight. ``scheduler`` None starts (and
    closes) a local cluster of ``workers`` processes.
    """

    name = "dask"

    def __init__(self, *, workers, chosen=(), scheduler=None):
        self.size = workers
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
                self._cluster = LocalCluster(n_workers=self.size, threads_per_worker=1,
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

    @staticmethod
    def warm_up(*, workers, modules):
        """Nothing to warm: Dask workers import for themselves."""

    def start(self):
        """Workers are started (or found) by :meth:`__enter__`."""

    def _limit(self):
        return max(2, 2 * sum(self._client.nthreads().values()))

    def run(self, tasks, caches):
        from concurrent.futures import CancelledError  # dask's FutureCancelledError is one

        from distributed import as_completed
        from distributed.scheduler import KilledWorker

        queue = TaskQueue(tasks, caches, limit=self._limit())  # one round trip to the scheduler
        in_flight = {}
        finished = as_completed(loop=self._client.loop)  # not the default client's loop
        try:
            while queue or in_flight:
                ready, upstream_failed = queue.next(len(in_flight))
                yield from upstream_failed
                for task in ready:
                    future = self._client.submit(worker.run_in_worker,
                                                 worker.specs_of(task.extractors),
                                                 task.clip.path, task.inputs, pure=False)
                    in_flight[future.key] = future, task
                    finished.add(future)
                if not in_flight:
                    continue
                future, task = in_flight.pop(next(finished).key)
                try:
                    result = task.clip, {**task.failed, **future.result()}
                except (KilledWorker, CancelledError) as error:
                    message = f"the dask worker died on this clip ({type(error).__name__})"
                    result = queue.died(task, message)
                except ModuleNotFoundError as error:  # run_clip catches the extractors' errors
                    raise GemoError(f"a dask worker cannot import {error.name}: the workers need "
                                    f"gemo installed (see docs/distributed.md)") from None
                future.release()
                if result is not None:
                    yield result
        finally:
            # Stopped early (Ctrl-C, an error writing): do not leave clips computing for nothing.
            finished.clear()
            if in_flight:
                self._client.cancel([future for future, _ in in_flight.values()])
