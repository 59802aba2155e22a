"""Writing a file whole or not at all: the one way gemo replaces a file it writes.

>>> with atomic_path("scores.json") as tmp:          # doctest: +SKIP
...     tmp.write_text(text)
"""

import os
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path):
    """A temporary path beside ``path`` to write to; on success it replaces ``path``.

    The new file is fsync'ed before the rename and its folder after it, so a crash or a
    power cut leaves the old file or the new one, never a part of either (a rename alone
    may reach the disk before the data). On an error the temporary file is removed.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        yield tmp
        with open(tmp, "rb+") as written:
            os.fsync(written.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if os.name == "posix":  # the rename itself; folders cannot be opened for it elsewhere
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
