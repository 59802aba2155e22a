"""``pyaudio``: pyAudioAnalysis short-term features (34 per window), as in Pinto 2020."""

import functools
from dataclasses import dataclass

import numpy as np

from gemo.extractors.audio import AudioParams, require_finite_rows
from gemo.extractors.base import Extractor, register


@register
class PyAudio(Extractor):
    name = "pyaudio"
    description = "pyAudioAnalysis short-term features, 34 per 25 ms window, 10 ms step, mono 16 kHz"

    @dataclass(frozen=True)
    class Params(AudioParams):
        window: float = 0.025  # seconds
        step: float = 0.010

        def check(self):
            if self.window <= 0 or self.step <= 0:
                return "window and step must be positive"
            return super().check()

    libraries = ("pyAudioAnalysis", "av", "scipy")
    modules = ("pyAudioAnalysis.ShortTermFeatures",)
    modality = "audio"

    def info(self):
        return {"feature_names": _feature_names()}

    def load(self):
        short_term_features()  # 2 s: pyAudioAnalysis imports scipy.signal and matplotlib

    def compute(self, media):
        rate = self.params.sample_rate
        signal = media.audio(sample_rate=rate)
        # pyAudioAnalysis divides by 2**15: it expects int16-scaled samples, as read from a wav.
        features, _ = short_term_features().feature_extraction(
            signal.astype(np.float64) * 32768.0,
            rate,
            round(self.params.window * rate),
            round(self.params.step * rate),
            deltas=False,
        )
        return {"features": require_finite_rows(features.T.astype(np.float32))}


def short_term_features():
    """pyAudioAnalysis's ``ShortTermFeatures`` module, with its chroma tables memoised.

    ``feature_extraction`` rebuilds the same two chroma tables, with a Python loop, for every
    window: 70% of its time on a 5 s clip. They depend only on (FFT size, sample rate) and
    are only read, so one read-only copy per pair is kept; the features do not change.
    """
    from pyAudioAnalysis import ShortTermFeatures

    build = ShortTermFeatures.chroma_features_init
    if not hasattr(build, "cache_info"):
        @functools.lru_cache(maxsize=8)
        def chroma_tables(num_fft, sampling_rate):
            tables = build(num_fft, sampling_rate)
            for table in tables:
                table.flags.writeable = False  # shared by every window: a writer fails loudly
            return tables

        ShortTermFeatures.chroma_features_init = chroma_tables
    return ShortTermFeatures


def _feature_names():
    spectral = ["zcr", "energy", "energy_entropy", "spectral_centroid", "spectral_spread",
                "spectral_entropy", "spectral_flux", "spectral_rolloff"]
    mfcc = [f"mfcc_{i}" for i in range(1, 14)]
    chroma = [f"chroma_{i}" for i in range(1, 13)] + ["chroma_std"]
    return spectral + mfcc + chroma
