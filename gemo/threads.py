"""CPU threads of gemo's own process: one, unless ``$GEMO_THREADS`` says otherwise.

torch's default is one thread per core, and numpy's BLAS and scikit-learn take every
core too. Their threads work in lock-step: each operation waits for the slowest
thread. When another job keeps one of the cores busy, the thread that shares that
core runs only in its time slices, and each of the many small operations of a step
waits for it: an LSTM step took 19.7 s with 2 threads against 0.25 s with 1 on a
2-core machine (issue 10). gemo's networks are small: a second thread trained
1.1x to 1.4x faster on an idle machine, and 1.6x to 9x slower beside a busy process
(docs/performance.md). So training, extraction with one worker and fusion run
:func:`limited`; ``GEMO_THREADS=N`` gives N threads on cores known to be free. Pool
workers are set to one thread before torch starts (:mod:`gemo.worker_setup`).
"""

import os
from contextlib import ExitStack, contextmanager

from gemo.errors import GemoError


def count():
    """The thread count to use: ``$GEMO_THREADS`` if set, else 1.

    >>> count()  # doctest: +SKIP
    1
    """
    value = os.environ.get("GEMO_THREADS", "").strip()
    if not value:
        return 1
    if not value.isdigit() or int(value) < 1:
        raise GemoError(f"GEMO_THREADS must be a whole number of threads, 1 or more, not "
                        f"{value!r}: unset it to use gemo's default of 1")
    return int(value)


def processes(workers=None):
    """Worker processes to run: ``workers``, or one per core when it is None (or 0).

    >>> processes(3), processes() == (os.cpu_count() or 1)
    (3, True)
    """
    return workers or os.cpu_count() or 1


@contextmanager
def limited(*, torch=True):
    """Inside, :func:`count` threads for torch (imported here unless ``torch=False``) and for
    the BLAS and OpenMP libraries loaded (numpy's, scikit-learn's); the previous counts are
    restored after."""
    from threadpoolctl import threadpool_limits

    threads = count()
    with ExitStack() as stack:
        if torch:
            stack.enter_context(_torch_threads(threads))  # first: torch loads its libraries
        stack.enter_context(threadpool_limits(threads))
        yield threads


@contextmanager
def _torch_threads(threads):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
