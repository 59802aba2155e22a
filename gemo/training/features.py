"""The feature cache as training reads it: the indexed clips it holds, their arrays read on
demand and checked, and the refusal of a cache unlike the one a model was trained on.

A multimodal model (``features="embed-mobilenet_v2,pyaudio"``) reads several caches as one
:class:`JointCache`, joined by clip id."""

from contextlib import ExitStack

from gemo.cache.store import FeatureCache
from gemo.errors import GemoError
from gemo.files import json_digest
from gemo.models.inputs import is_finite

SPLIT_ORDER = ("train", "val", "test")


def read(cache, clip_id, inputs, feature_set=""):
    """A clip's arrays, checked by ``inputs`` (a model's :mod:`gemo.models.inputs`) unless None."""
    arrays = cache.read(clip_id)
    return arrays if inputs is None else inputs.check(clip_id, arrays, feature_set)


def main_ndim(sample):
    """Dimensions of a clip's frames or features array: the default family depends on it."""
    array = sample.get("frames", sample.get("features"))
    return None if array is None else array.ndim


def input_dim(family, sample, feature_set):
    """The width of ``family``'s input: the last axis of the frames, per-face embeddings or
    features array; one width per set for a model over several sets (input kind ``sequences``)."""
    sets = feature_list(feature_set)
    if (family.input_kind == "sequences") != (len(sets) > 1):
        raise GemoError(
            f"model {family.name} reads two or more feature sets: `gemo train multimodal "
            f"--features {feature_set},SET --model {family.name}`"
            if len(sets) == 1 else
            f"model {family.name} reads one feature set; a list of sets trains a model over "
            f"several sequences: --model {' or '.join(_joint_families())}")
    if len(sets) > 1:
        return [_features_width(family, arrays, name) for name, arrays in sample.items()]
    if family.input_kind == "frames":
        if "frames" not in sample:
            raise GemoError(f"model {family.name} needs frames; {feature_set} has "
                            f"{', '.join(sorted(sample))}")
        return int(sample["frames"].shape[-1])
    if family.input_kind == "faces":
        if "embeddings" not in sample:  # per-face embeddings came with fer version 3
            raise GemoError(f"model {family.name} needs per-face embeddings; {feature_set} has "
                            f"{', '.join(sorted(sample))}: train it on fer, version 3 or later "
                            "(`gemo extract --only fer --overwrite`)")
        return int(sample["embeddings"].shape[-1])
    return _features_width(family, sample, feature_set)


def _features_width(family, sample, feature_set):
    if "features" not in sample:
        raise GemoError(f"model {family.name} needs a features array; {feature_set} has "
                        f"{', '.join(sorted(sample))}")
    return int(sample["features"].shape[-1])


def cached_clips(cache, index):
    """Index clips present in the cache, train/val/test then index order."""
    stored = set(cache.ids())
    order = {split: i for i, split in enumerate(SPLIT_ORDER)}
    return sorted((c for c in index.clips if c.id in stored),
                  key=lambda c: order.get(c.split, len(order)))


class CacheArrays:
    """Per-clip arrays read from the cache on demand (a set of frames can exceed memory)."""

    def __init__(self, cache, inputs, feature_set):
        self.cache, self.inputs, self.feature_set = cache, inputs, feature_set
        self._finite = {}

    def get(self, clip_id):
        return read(self.cache, clip_id, self.inputs, self.feature_set)

    def finite(self, clip_id):
        if not self.inputs.may_be_nonfinite:
            return True  # no need to read every clip's frames just to find no NaN
        if clip_id not in self._finite:
            self._finite[clip_id] = is_finite(self.get(clip_id))
        return self._finite[clip_id]


def check_features(expected, cache, *, name):
    """Refuse a cache whose features are not those the model was trained on; a joint cache
    set by set."""
    if isinstance(cache, JointCache):
        for one in feature_list(expected["set"]):
            check_features(expected["sets"][one], cache.caches[one], name=name)
        return
    if cache.fingerprint() == expected["fingerprint"] and (
        not expected.get("feature_names")
        or list(cache.info.get("feature_names", [])) == expected["feature_names"]
    ):
        return
    own = cache.provenance
    differences = []
    if own["feature_set"] != expected["set"]:
        differences.append(f"feature set: model {expected['set']!r}, cache {own['feature_set']!r}")
    if own["extractor_version"] != expected.get("extractor_version"):
        differences.append(f"extractor version: model {expected.get('extractor_version')}, "
                           f"cache {own['extractor_version']}")
    trained = expected.get("params", {})
    for key in sorted(set(trained) | set(own["params"])):
        if trained.get(key) != own["params"].get(key):
            differences.append(
                f"{key}: model {trained.get(key)!r}, cache {own['params'].get(key)!r}")
    if expected.get("feature_names") and list(own["info"].get("feature_names", [])) != list(
            expected["feature_names"]):
        differences.append("feature names differ")
    if not differences:
        differences.append(f"fingerprint: model {expected['fingerprint']}, "
                           f"cache {cache.fingerprint()}")
    raise GemoError(
        f"model {name} was trained on other {expected['set']} features than {cache.path}:\n  "
        + "\n  ".join(differences)
        + f"\nretrain it (`gemo train`) or re-extract {expected['set']} with the model's settings"
    )


def feature_list(features):
    """The feature sets of ``features``: one name, or a comma list of two or more (a
    multimodal model's), each named once.

    >>> feature_list("embed-mobilenet_v2,pyaudio")
    ['embed-mobilenet_v2', 'pyaudio']
    """
    sets = features.split(",")
    if not all(sets):
        raise GemoError(f"--features {features!r} has an empty name: give SET or SET,SET,...")
    twice = sorted({name for name in sets if sets.count(name) > 1})
    if twice:
        raise GemoError(f"--features names {', '.join(twice)} twice: name each set once")
    return sets


def open_cache(workspace, features):
    """The cache of ``features`` for reading: a :class:`FeatureCache`, or a :class:`JointCache`
    of a comma list."""
    sets = feature_list(features)
    if len(sets) == 1:
        return FeatureCache(workspace.cache_path(sets[0]))
    return JointCache({name: workspace.cache_path(name) for name in sets})


def describe(cache, features):
    """What a checkpoint records of the features it was trained on (``check_features`` reads
    it back): set, fingerprint, extractor version, parameters and feature names; for a joint
    cache, that of every set under ``sets``."""
    if isinstance(cache, JointCache):
        sets = {name: describe(one, name) for name, one in cache.caches.items()}
        return {"set": features, "fingerprint": cache.fingerprint(),
                "extractor_version": {name: one["extractor_version"] for name, one in sets.items()},
                "params": {name: one["params"] for name, one in sets.items()},
                "feature_names": [], "sets": sets}
    return {"set": features, "fingerprint": cache.fingerprint(),
            "extractor_version": cache.provenance["extractor_version"], "params": cache.params,
            "feature_names": list(cache.info.get("feature_names", []))}


def missing_by_set(cache, index):
    """``{set: indexed clips it lacks}`` of a joint cache (those clips are left out), else None."""
    if not isinstance(cache, JointCache):
        return None
    indexed = {c.id for c in index.clips}
    return {name: len(indexed - set(one.ids())) for name, one in cache.caches.items()}


class JointCache:
    """Several feature caches read as one, joined by clip id: what a multimodal model trains
    on. It holds the clips every cache holds; ``read`` gives ``{set: that set's arrays}``.
    Reads like a :class:`FeatureCache` (ids, read, in, failures, fingerprint); ``caches``
    holds each set's, for :func:`describe` and :func:`check_features`."""

    def __init__(self, paths):
        with ExitStack() as stack:  # a missing cache closes those already open
            self.caches = {name: stack.enter_context(FeatureCache(path))
                           for name, path in paths.items()}
            self._close = stack.pop_all()
        self.path = ", ".join(str(one.path) for one in self.caches.values())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self._close.close()

    def ids(self):
        held = [set(one.ids()) for one in self.caches.values()]
        return sorted(set.intersection(*held))

    def read(self, clip_id):
        return {name: one.read(clip_id) for name, one in self.caches.items()}

    def __contains__(self, clip_id):
        return all(clip_id in one for one in self.caches.values())

    def failures(self):
        """``{id: {"kind", "message"}}`` of clips a set failed on, the set named in the message."""
        return {clip_id: {"kind": failure["kind"], "message": f"{name}: {failure['message']}"}
                for name, one in self.caches.items()
                for clip_id, failure in one.failures().items()}

    def fingerprint(self):
        """A hash of every set's fingerprint and feature names, in order."""
        return json_digest([[name, one.fingerprint(), one.info.get("feature_names", [])]
                            for name, one in self.caches.items()])


def _joint_families():
    from gemo import models

    return [name for name in models.available() if models.get(name).input_kind == "sequences"]
