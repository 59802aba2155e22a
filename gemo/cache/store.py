"""HDF5 feature cache: one file per feature set, one group per clip.

Layout (see docs/cache-format.md)::

    /                    attrs: format, gemo_version, feature_set, extractor_version,
                                params (JSON), libraries (JSON), info (JSON), created
    /clips/<id>/<array>  one dataset per array the extractor returns
    /clips/<id>          attrs: fingerprint (JSON), path, complete (written last)
    /failures/<id>       attrs: kind, message, fingerprint (JSON)

Crash safety: one writer per file (an exclusive lock), the ``complete`` attr is
written after a clip's arrays, and the file is flushed and fsync'ed after each
clip. A clip group without ``complete`` (the one in flight at a crash) is
removed when the file is next opened for writing.
"""

import fcntl
import json
import os
import time
from pathlib import Path

import h5py
import numpy as np

import gemo
from gemo.errors import GemoError
from gemo.files import json_digest, sha256_file

FORMAT = "gemo-feature-cache/1"


class CacheMismatch(GemoError):
    """A cache built with other parameters, extractor version or source files."""


class CacheLocked(GemoError):
    """Another process is writing this cache."""


def fingerprint_file(path, *, previous=None):
    """Size, mtime and SHA-256 of a file, as a dict.

    When ``previous`` has the same size and mtime the hash is not recomputed
    (the file is taken as unchanged), which keeps a resumed run cheap.
    """
    stat = os.stat(path)
    if previous and previous.get("size") == stat.st_size and previous.get("mtime_ns") == stat.st_mtime_ns:
        return dict(previous)
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha256_file(path)}


def same_source(a, b):
    """True when two fingerprints describe the same content."""
    return a is not None and b is not None and a.get("sha256") == b.get("sha256")


class FeatureCache:
    """One feature set's cache file.

    Read with ``FeatureCache(path)``; write with
    ``FeatureCache(path, mode="a", provenance=extractor.provenance())``, which
    creates the file or checks that it was built for the same provenance.

    >>> with FeatureCache("gemo-work/cache/pyaudio.h5") as cache:   # doctest: +SKIP
    ...     x = cache.read("1_1")["features"]
    """

    def __init__(self, path, *, mode="r", provenance=None):
        self.path = Path(path)
        self.mode = mode
        self._lock = None
        if mode == "r":
            if not self.path.exists():
                raise GemoError(f"no cache at {self.path}: run `gemo extract` for this feature set")
            self._file = h5py.File(self.path, "r")
            self._check_format()
        elif mode == "a":
            if provenance is None:
                raise ValueError("provenance is required to write a cache")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._take_lock()
            if not self.path.exists():
                self._create(provenance)
            self._file = h5py.File(self.path, "a")
            self._check_format()
            self.check_provenance(provenance)
            self._drop_incomplete()
        else:
            raise ValueError(f"mode must be 'r' or 'a', not {mode!r}")

    # -- life cycle ---------------------------------------------------------
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if getattr(self, "_file", None) is not None:
            self._file.close()
            self._file = None
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def _take_lock(self):
        handle = open(self.path.with_name(self.path.name + ".lock"), "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise CacheLocked(f"{self.path} is being written by another gemo process") from None
        self._lock = handle

    def _create(self, provenance):
        """Write the empty file under a temporary name, then rename it into place.

        A run killed while creating the file thus never leaves a half-written one.
        """
        tmp = self.path.with_name(self.path.name + ".tmp")
        self._file = h5py.File(tmp, "w")
        try:
            self._init(provenance)
        finally:
            self._file.close()
            self._file = None
        os.replace(tmp, self.path)

    def _init(self, provenance):
        attrs = self._file.attrs
        attrs["format"] = FORMAT
        attrs["gemo_version"] = gemo.__version__
        attrs["feature_set"] = provenance["feature_set"]
        attrs["extractor_version"] = provenance["extractor_version"]
        attrs["params"] = json.dumps(provenance["params"], sort_keys=True)
        attrs["libraries"] = json.dumps(provenance.get("libraries", {}), sort_keys=True)
        info = provenance.get("info", {})
        attrs["info"] = json.dumps(info() if callable(info) else info, sort_keys=True)
        attrs["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self._file.create_group("clips")
        self._file.create_group("failures")
        self._sync()

    def _check_format(self):
        if self._file.attrs.get("format") != FORMAT:
            raise CacheMismatch(f"{self.path} is not a gemo feature cache ({FORMAT})")

    def _sync(self):
        self._file.flush()
        os.fsync(self._file.id.get_vfd_handle())

    # -- provenance ---------------------------------------------------------
    @property
    def provenance(self):
        attrs = self._file.attrs
        return {
            "feature_set": str(attrs["feature_set"]),
            "extractor_version": int(attrs["extractor_version"]),
            "params": json.loads(attrs["params"]),
            "libraries": json.loads(attrs["libraries"]),
            "info": json.loads(attrs["info"]),
            "gemo_version": str(attrs["gemo_version"]),
        }

    @property
    def feature_set(self):
        return self.provenance["feature_set"]

    @property
    def params(self):
        return self.provenance["params"]

    @property
    def info(self):
        """Extractor-level constants, e.g. ``feature_names``."""
        return self.provenance["info"]

    def fingerprint(self):
        """A short hash of what the features mean (set, extractor version, params).

        Models store it and refuse features with another fingerprint.
        """
        own = self.provenance
        return json_digest([own["feature_set"], own["extractor_version"], own["params"]])

    def check_provenance(self, provenance):
        """Raise :class:`CacheMismatch` naming what differs from ``provenance``."""
        own = self.provenance
        differences = []
        for key in ("feature_set", "extractor_version"):
            if own[key] != provenance[key]:
                differences.append(f"{key}: cache has {own[key]!r}, asked {provenance[key]!r}")
        asked = provenance["params"]
        for key in sorted(set(own["params"]) | set(asked)):
            if own["params"].get(key) != asked.get(key):
                differences.append(
                    f"{key}: cache has {own['params'].get(key)!r}, asked {asked.get(key)!r}"
                )
        if differences:
            raise CacheMismatch(
                f"{self.path} was built with other settings:\n  "
                + "\n  ".join(differences)
                + "\nuse --overwrite to rebuild it, or another --workdir"
            )

    # -- per clip -----------------------------------------------------------
    def _drop_incomplete(self):
        clips = self._file["clips"]
        stale = [name for name, group in clips.items() if not group.attrs.get("complete", False)]
        for name in stale:
            del clips[name]
        if stale:
            self._sync()

    def ids(self):
        """Ids of the clips stored complete."""
        return sorted(n for n, g in self._file["clips"].items() if g.attrs.get("complete", False))

    def failures(self):
        """``{id: {"kind": ..., "message": ...}}`` of the clips that failed."""
        return {
            name: {"kind": str(g.attrs["kind"]), "message": str(g.attrs["message"])}
            for name, g in self._file["failures"].items()
        }

    def stored_fingerprint(self, clip_id):
        """The source fingerprint of a done or failed clip, or None if neither."""
        for section in ("clips", "failures"):
            group = self._file[section].get(clip_id)
            if group is not None and (section == "failures" or group.attrs.get("complete", False)):
                return json.loads(group.attrs["fingerprint"])
        return None

    def __contains__(self, clip_id):
        group = self._file["clips"].get(clip_id)
        return group is not None and bool(group.attrs.get("complete", False))

    def read(self, clip_id, names=None):
        """The arrays stored for a clip, as ``{name: ndarray}`` (only ``names`` when given)."""
        group = self._file["clips"].get(clip_id)
        if group is None or not group.attrs.get("complete", False):
            raise KeyError(f"clip {clip_id!r} is not in {self.path.name}")
        return {name: dataset[()] for name, dataset in group.items() if names is None or name in names}

    def write(self, clip_id, arrays, *, fingerprint, path=""):
        """Store a clip's arrays; the clip counts only once this returns."""
        self.forget(clip_id)
        group = self._file["clips"].create_group(clip_id)
        for name, array in arrays.items():
            array = np.asarray(array)
            if array.dtype.kind == "U":
                group.create_dataset(name, data=array.astype(object), dtype=h5py.string_dtype())
            else:
                group.create_dataset(name, data=array)
        group.attrs["fingerprint"] = json.dumps(fingerprint, sort_keys=True)
        group.attrs["path"] = str(path)
        self._file.flush()
        group.attrs["complete"] = True
        self._sync()

    def write_failure(self, clip_id, *, kind, message, fingerprint):
        self.forget(clip_id)
        group = self._file["failures"].create_group(clip_id)
        group.attrs["kind"] = kind
        group.attrs["message"] = message
        group.attrs["fingerprint"] = json.dumps(fingerprint, sort_keys=True)
        self._sync()

    def forget(self, clip_id):
        """Remove a clip's result or failure (before redoing it)."""
        for section in ("clips", "failures"):
            if clip_id in self._file[section]:
                del self._file[section][clip_id]
