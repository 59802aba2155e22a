"""Shared audio helpers for the audio feature sets."""

from dataclasses import dataclass

import numpy as np

from gemo.data.media import MediaError
from gemo.options import Options


@dataclass(frozen=True)
class AudioParams(Options):
    """The parameter every audio set has: the rate the clip's mono audio is resampled to."""

    sample_rate: int = 16000

    def check(self):
        return "sample_rate must be positive" if self.sample_rate < 1 else None


def require_finite_rows(features):
    """Keep windows with NaN (see docs/cache-format.md, NaN policy) unless all are bad.

    ``features`` is ``[windows, dims]`` (or ``[dims]`` for functionals, one row).
    A clip whose every window has a non-finite value carries no usable audio
    features and is recorded as failed with kind ``nan``.
    """
    rows = np.atleast_2d(features)
    bad = ~np.isfinite(rows).all(axis=1)
    if bad.all():
        raise MediaError("nan", f"all {len(rows)} feature window(s) contain NaN or inf")
    return features
