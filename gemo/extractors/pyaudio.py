"""``pyaudio``: pyAudioAnalysis short-term features (34 per window), as in Pinto 2020."""

import numpy as np

from gemo.extractors.audio import require_finite_rows
from gemo.extractors.base import Extractor, register


@register
class PyAudio(Extractor):
    name = "pyaudio"
    description = "pyAudioAnalysis short-term features, 34 per 25 ms window, 10 ms step, mono 16 kHz"
    defaults = {"sample_rate": 16000, "window": 0.025, "step": 0.010}
    libraries = ("pyAudioAnalysis", "av", "scipy")

    def info(self):
        return {"feature_names": _feature_names()}

    def load(self):
        import pyAudioAnalysis.ShortTermFeatures  # noqa: F401  (2 s: scipy.signal, matplotlib)

    def compute(self, media):
        from pyAudioAnalysis import ShortTermFeatures

        rate = self.params["sample_rate"]
        signal = media.audio(sample_rate=rate)
        # pyAudioAnalysis divides by 2**15: it expects int16-scaled samples, as read from a wav.
        features, _ = ShortTermFeatures.feature_extraction(
            signal.astype(np.float64) * 32768.0,
            rate,
            round(self.params["window"] * rate),
            round(self.params["step"] * rate),
            deltas=False,
        )
        return {"features": require_finite_rows(features.T.astype(np.float32))}


def _feature_names():
    spectral = ["zcr", "energy", "energy_entropy", "spectral_centroid", "spectral_spread",
                "spectral_entropy", "spectral_flux", "spectral_rolloff"]
    mfcc = [f"mfcc_{i}" for i in range(1, 14)]
    chroma = [f"chroma_{i}" for i in range(1, 13)] + ["chroma_std"]
    return spectral + mfcc + chroma
