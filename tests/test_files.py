"""The shared file helpers: atomic writes, JSON cleaning, hashing."""

import hashlib
import json

import numpy as np
import pytest

from gemo.files import atomic_write, plain, sha256_file, write_json


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "deep" / "config.json"
    write_json(path, {"a": 1})

    def broken(tmp):
        tmp.write_text('{"a": ')  # half written, then the writer dies
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, broken)
    assert json.loads(path.read_text()) == {"a": 1}
    assert sorted(p.name for p in path.parent.iterdir()) == ["config.json"]


def test_plain_gives_json_types():
    value = {"n": np.int64(3), "x": np.float32(0.25), "t": (1, 2), "a": np.arange(2),
             "nan": float("nan"), 4: tmp_path_like()}
    assert plain(value) == {"n": 3, "x": 0.25, "t": [1, 2], "a": [0, 1], "nan": None,
                            "4": "some/path"}
    json.dumps(plain(value))


def tmp_path_like():
    from pathlib import PurePosixPath

    return PurePosixPath("some/path")


def test_sha256_file(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * (3 << 20))
    assert sha256_file(path) == hashlib.sha256(b"x" * (3 << 20)).hexdigest()
