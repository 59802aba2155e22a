"""Triangular filters on the HTK mel scale: the ``mel`` set's and OpenL3's front end (numpy).

>>> bank = filterbank(16000, 512, 64, 125.0, 7500.0)    # 16 kHz, 512-point FFT, 64 bands
>>> bank.shape, round(float(bank.max()), 2)              # peaks fall between FFT bins
((64, 257), 1.0)
"""

import functools

import numpy as np


def hz_to_mel(hz):
    """HTK's mel scale, ``2595 log10(1 + f / 700)``."""
    return 2595.0 * np.log10(1.0 + np.asarray(hz, np.float64) / 700.0)


def band_edges(n_mels, fmin, fmax):
    """``n_mels + 2`` frequencies in Hz equally spaced on the HTK mel scale: band ``i`` rises
    from edge ``i`` to a peak at edge ``i + 1`` and falls to zero at edge ``i + 2``."""
    mel = np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2)
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


@functools.lru_cache(maxsize=16)
def filterbank(sample_rate, n_fft, n_mels, fmin, fmax, *, unit_area=False):
    """Weights ``[n_mels, n_fft // 2 + 1]`` float32 (read-only, shared by every caller) of
    triangles linear in Hz, peaking at 1, or scaled to unit area in Hz with ``unit_area``
    (Slaney's normalisation, as kapre 0.1.4 built OpenL3's)."""
    edges = band_edges(n_mels, fmin, fmax)
    bins = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    lower, peak, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins - lower) / (peak - lower)
    falling = (upper - bins) / (upper - peak)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    if unit_area:
        weights = weights * (2.0 / (upper - lower))
    weights = weights.astype(np.float32)
    weights.flags.writeable = False
    return weights
