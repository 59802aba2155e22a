"""A feature set written outside gemo: per-frame brightness and colour, registered with gemo.

Importing this module registers ``brightness`` with gemo's extractor registry, after which
``gemo.api.extract(sets=["brightness"])`` computes and caches it like a built-in set (and
``gemo train scene --features brightness`` trains on it). Worker processes unpickle the
extractor by importing this module, so it must be importable there too (on ``sys.path`` or
installed), as any plug-in module.
"""

from dataclasses import dataclass

import numpy as np

from gemo.extractors import Extractor, register
from gemo.options import Options


@register
class Brightness(Extractor):
    name = "brightness"
    version = 1  # bump when the stored values change: caches of another version are refused
    description = "mean and spread of each colour channel in K frames, float32 [K, 6]"
    modality = "scene"
    libraries = ("numpy",)

    @dataclass(frozen=True)
    class Params(Options):
        count: int = 8
        size: int = 64

        def check(self):
            return "count and size must be positive" if min(self.count, self.size) < 1 else None

    def frame_counts(self):  # lets one decode serve this set and the others of a clip
        return (self.params.count,)

    def info(self):
        return {"feature_names": [f"{stat}_{c}" for stat in ("mean", "std") for c in "rgb"]}

    def compute(self, media):
        frames, timestamps = media.frames(count=self.params.count, size=self.params.size)
        pixels = frames.reshape(len(frames), -1, 3).astype(np.float32) / 255
        features = np.concatenate([pixels.mean(axis=1), pixels.std(axis=1)], axis=1)
        return {"features": features.astype(np.float32), "timestamps": timestamps}
