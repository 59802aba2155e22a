"""``mel``: log-mel spectrogram of the mono 16 kHz audio, the input of Fusical's CNN + Bi-LSTM.

The defaults are VGGish's (AudioSet) parameters: 25 ms periodic Hann windows every 10 ms,
the magnitude of a 512-point FFT, 64 triangular bands equally spaced on the HTK mel scale
from 125 to 7500 Hz (peak weight 1), then ``log(mel + 0.01)``. The triangles are linear
in Hz, as librosa's and torchaudio's (VGGish's own matrix is linear in mel). A 5 s clip
gives 498 frames, as many as ``pyaudio`` has windows. Plain numpy (:mod:`gemo.audio.mel`): torchaudio and librosa
are not dependencies, and no installed library offers a configurable mel filterbank.
"""

from dataclasses import dataclass

import numpy as np

from gemo.audio import mel
from gemo.data.media import MediaError
from gemo.extractors.audio import AudioParams
from gemo.extractors.base import Extractor, register


@register
class Mel(Extractor):
    name = "mel"
    description = ("log-mel spectrogram, 64 bands 125-7500 Hz per 25 ms window, 10 ms step, "
                   "mono 16 kHz")

    @dataclass(frozen=True)
    class Params(AudioParams):
        n_mels: int = 64
        window: float = 0.025  # seconds
        step: float = 0.010
        fmin: float = 125.0  # Hz, lower edge of the lowest band
        fmax: float = 7500.0  # Hz, upper edge of the highest band
        log_offset: float = 0.01  # added to the mel magnitudes before the log: silence's value

        def check(self):
            problem = super().check()
            if problem:
                return problem
            if min(self.window, self.step) * self.sample_rate < 1:
                return "window and step must last at least one sample"
            if self.n_mels < 1 or self.log_offset <= 0:
                return "n_mels and log_offset must be positive"
            if not 0 <= self.fmin < self.fmax <= self.sample_rate / 2:
                return (f"need 0 <= fmin < fmax <= {self.sample_rate / 2:g} Hz (half the "
                        f"sample rate), got fmin {self.fmin:g}, fmax {self.fmax:g}")
            if not filterbank(self).sum(axis=1).all():
                return (f"{self.n_mels} bands are narrower than the FFT bins of a "
                        f"{self.window * 1000:g} ms window: ask for fewer bands, a higher fmin "
                        "or a longer window")
            return None

    libraries = ("numpy", "av")
    modality = "audio"

    def info(self):
        p = self.params
        centres = mel.band_edges(p.n_mels, p.fmin, p.fmax)[1:-1]
        return {"feature_names": [f"mel{i:02d}_{hz:.0f}hz" for i, hz in enumerate(centres)]}

    def compute(self, media):
        signal = media.audio(sample_rate=self.params.sample_rate)
        return {"features": log_mel(signal, self.params)}


def log_mel(signal, params):
    """``log(mel + log_offset)`` of a mono float signal, float32 ``[frames, n_mels]``; frames
    start every ``step`` and only whole windows are kept (none padded)."""
    rate = params.sample_rate
    window, step = round(params.window * rate), round(params.step * rate)
    if len(signal) < window:
        raise MediaError("too-short", f"audio has {len(signal)} samples, less than one "
                                      f"{params.window * 1000:g} ms window")
    frames = np.lib.stride_tricks.sliding_window_view(signal, window)[::step]
    hann = np.hanning(window + 1)[:-1].astype(np.float32)  # periodic, as in spectral analysis
    magnitude = np.abs(np.fft.rfft(frames * hann, n=fft_size(params), axis=1))
    bands = magnitude.astype(np.float32) @ filterbank(params).T
    return np.log(bands + np.float32(params.log_offset))


def fft_size(params):
    """The smallest power of two that holds one window."""
    return 1 << (round(params.window * params.sample_rate) - 1).bit_length()


def filterbank(params):
    """The set's triangular weights ``[n_mels, fft_size // 2 + 1]`` (read-only)."""
    return mel.filterbank(params.sample_rate, fft_size(params), params.n_mels, params.fmin,
                          params.fmax)
