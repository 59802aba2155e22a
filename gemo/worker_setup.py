"""Imported first in gemo's pool workers, and in the fork server they are forked from.

- One thread per numerical library: several workers share the cores already, and torch,
  OpenMP or BLAS threads on top would fight over them. The variables are read when numpy's
  BLAS and torch start, so this module comes before them.
- Ctrl-C is the main process's to report: a worker, or the fork server while it imports,
  exits at once and quietly (it printed a traceback from deep inside torch's imports).
"""

import os
import signal

for _variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_variable] = "1"
signal.signal(signal.SIGINT, lambda *_: os._exit(130))
