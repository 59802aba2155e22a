"""The feature cache as training reads it: the indexed clips it holds, their arrays read on
demand and checked, and the refusal of a cache unlike the one a model was trained on."""

from gemo.errors import GemoError
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
    features array."""
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
    """Refuse a cache whose features are not those the model was trained on."""
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
