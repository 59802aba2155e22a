"""Worker processes: how they start, and what runs inside them.

A worker builds its extractors once from their :class:`Spec` (networks load once
per worker) and runs :func:`run_in_worker` on each clip it is given. Pools pickle
:func:`init_worker` and :func:`run_in_worker` by reference, so workers import
this module: the fork server imports it once for all of them (:data:`PRELOAD`).
"""

import multiprocessing
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing import forkserver, get_context
from multiprocessing.connection import wait as wait_for

from gemo import extractors
from gemo.extraction.clip import Outcome, run_clip

# What the fork server imports before forking workers: their set-up, then what they run;
# the sets' own modules come next, and FROZEN, which freezes what they made, last.
PRELOAD = ("gemo.worker_setup", "gemo.extraction.workers")
FROZEN = "gemo.extraction.preloaded"


@dataclass(frozen=True)
class Spec:
    """What a worker needs to build the same extractor as this process."""

    name: str
    params: dict
    device: str
    batch_size: int

    @classmethod
    def of(cls, extractor):
        return cls(extractor.name, extractor.params.as_dict(), extractor.device, extractor.batch_size)

    def key(self):
        return self.name, tuple(sorted(self.params.items())), self.device, self.batch_size


def specs_of(chosen):
    return [Spec.of(extractor) for extractor in chosen]


_EXTRACTORS = {}  # Spec.key() -> this worker's extractor
_START_ERROR = None  # why this worker could not load its sets, reported on each of its clips


def init_worker(specs):
    """Pool worker set-up: one thread per library, exit when the parent dies, load the sets.

    A killed run must leave no orphans: the worker waits on its parent's sentinel, which
    closes when the parent dies, however it dies. Loading the extractors of ``specs`` now
    overlaps their imports with the main process's own set-up. A worker that cannot build
    them stays up to say why on each clip: one that exits is only known to have died.
    """
    global _START_ERROR
    import gemo.worker_setup  # noqa: F401  (before torch; a no-op where the server did it)

    exit_with_parent()
    try:
        chosen = worker_extractors(specs)
    except Exception as error:  # noqa: BLE001  e.g. a set registered in the main process only
        _START_ERROR = f"{type(error).__name__}: {error}"
        return
    for extractor in chosen:
        try:
            extractor.load()
        except Exception:  # noqa: BLE001  the same error is recorded per clip, where it is clear
            pass


def exit_with_parent():
    """Make this pool worker exit as soon as its parent process dies, however it dies.

    A killed run must leave no orphans computing on: a thread waits on the parent's sentinel,
    which closes when the parent dies. Pools take it as their ``initializer``.
    """
    sentinel = multiprocessing.parent_process().sentinel

    def watch():
        wait_for([sentinel])
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def run_in_worker(specs, path, inputs):
    """:func:`run_clip` in a worker, with the extractors of ``specs``: ``{set: Outcome}``."""
    if _START_ERROR is not None:
        failed = Outcome.failure("crash", f"the worker process could not start: {_START_ERROR}")
        return {spec.name: failed for spec in specs}
    return run_clip(worker_extractors(specs), path, inputs)


def worker_extractors(specs):
    """This worker's extractor of each spec, built once and kept (networks load once)."""
    chosen = []
    for spec in specs:
        key = spec.key()
        if key not in _EXTRACTORS:
            _EXTRACTORS[key] = extractors.create(spec.name, device=spec.device,
                                                 batch_size=spec.batch_size, **spec.params)
        chosen.append(_EXTRACTORS[key])
    return chosen


def pool_context(modules):
    """How pool workers start: forked from a fork server that imported ``modules`` once.

    Importing torch, pyAudioAnalysis and openSMILE takes 7 s of one core; the server does it
    once for all workers, and for pools rebuilt after a worker died. Never a plain fork of
    this process, which may hold threads (progress bar) and open HDF5 files. Where there is
    no fork server (Windows), or it cannot be kept off the current directory (Python 3.10,
    see :func:`start_fork_server`), workers are spawned and import for themselves.
    """
    if "forkserver" not in multiprocessing.get_all_start_methods() or sys.version_info < (3, 11):
        return get_context("spawn")
    context = get_context("forkserver")
    # Effective when the server starts (the first pool of this process); later pools reuse it.
    context.set_forkserver_preload([*PRELOAD, *modules, FROZEN])
    return context


def started_pool_context(modules):
    """:func:`pool_context` of ``modules``, with its fork server started where it has one."""
    context = pool_context(modules)
    if context.get_start_method() == "forkserver":
        start_fork_server()
    return context


def start_fork_server():
    """Start the fork server (if not running) with this process's module path.

    multiprocessing runs the server as ``python -c``, whose path begins with the current
    directory, and gives it nothing of this process's path. Run from a directory holding a
    folder named gemo (a clone in ~/gemo, run from ~), the server imported that folder as
    gemo, and every worker forked from it died at start-up. PYTHONSAFEPATH (Python 3.11)
    keeps the current directory off; PYTHONPATH puts this process's path first, so the
    server imports each module from where this process does. The server and its workers keep
    both variables; this process gets its own back.
    """
    saved = {name: os.environ.get(name) for name in ("PYTHONPATH", "PYTHONSAFEPATH")}
    path = [os.fspath(entry) or os.getcwd() for entry in sys.path]  # "": the current directory
    os.environ["PYTHONPATH"] = os.pathsep.join(path)
    os.environ["PYTHONSAFEPATH"] = "1"
    try:
        forkserver.ensure_running()
    finally:
        for name, value in saved.items():
            if value is None:
                del os.environ[name]
            else:
                os.environ[name] = value


def exit_codes(processes, *, timeout=10.0):
    """Exit codes of a broken pool's ``processes``, waiting at most ``timeout`` seconds in all.

    The pool's own thread terminates and reaps them too, so whether a process has ended is
    read from its sentinel (``is_alive()`` can say True while that thread reaps it), and a
    code the other thread reaped appears on the shared process object a moment later. A
    process still running at the deadline is killed and left out (it is not the one that died).
    """
    deadline = time.monotonic() + timeout
    codes = []
    for process in processes:
        if not wait_for([process.sentinel], max(0.0, deadline - time.monotonic())):
            process.kill()
            continue
        while process.exitcode is None and time.monotonic() < deadline:
            time.sleep(0.01)
        codes.append(process.exitcode)
    return codes


def how_they_died(exitcodes):
    """How the workers of a broken pool died, e.g. ``"killed by signal SIGKILL"``; or None.

    The pool terminates (SIGTERM) the workers left once one died: those are not the cause.
    """
    causes = dict.fromkeys(_exit_cause(code) for code in exitcodes
                           if code is not None and code != -signal.SIGTERM)
    return ", ".join(causes) or None


def _exit_cause(code):
    if code >= 0:
        return f"exit code {code}"
    try:
        return f"killed by signal {signal.Signals(-code).name}"
    except ValueError:  # a real-time signal: no name
        return f"killed by signal {-code}"
