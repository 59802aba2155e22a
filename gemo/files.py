"""Writing artifacts safely and describing files: one helper per idea, used by every stage.

Every artifact gemo writes (checkpoints, score tables, configs, reports, the
dataset index) goes through :func:`atomic_write`: a crash or Ctrl-C leaves the
previous file or the new one, never half of one.

>>> write_json("gemo-work/models/x/config.json", {"lr": np.float32(0.5)})   # doctest: +SKIP
"""

import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np


def atomic_write(path, write):
    """Call ``write(tmp)`` on a temporary path beside ``path``, flush it to disk, rename it.

    The folder is created if needed. Returns ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_folder(path.parent)
    return path


def _fsync_folder(folder):
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:  # not possible everywhere (Windows): the rename itself is still atomic
        return
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def write_text(path, text):
    """Write ``text`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def write_json(path, data):
    """Write ``data`` as indented JSON, atomically, after :func:`plain`."""
    return write_text(path, json.dumps(plain(data), indent=1) + "\n")


def plain(value):
    """``value`` with JSON's types only: numpy values as Python ones, tuples as lists, paths
    as text, NaN as None.

    >>> plain({"a": (np.int64(1), np.float32(0.5)), "b": float("nan")})
    {'a': [1, 0.5], 'b': None}
    """
    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [plain(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)  # paths, versions


def sha256_file(path):
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def json_digest(value, *, length=16):
    """The first ``length`` hex digits of the SHA-256 of ``value`` as JSON (keys sorted): a
    short fingerprint of settings.

    >>> json_digest({"b": 1, "a": [2]}) == json_digest({"a": [2], "b": 1})
    True
    """
    text = json.dumps(value, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:length]
