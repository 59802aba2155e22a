"""``openl3``: OpenL3 audio embeddings of 1 s windows every 0.5 s, as in Fusical (Jin 2020).

The clip's mono audio is resampled to 48 kHz (the rate OpenL3 was trained at) and cut
into windows as the openl3 package does; each window gives one embedding, so a 5 s
clip gives 10 or 11 rows (11 when the audio lasts a little over 5 s). Weights:
``gemo weights fetch openl3.<repr>.<content>.<size>`` (docs/audio.md).
"""

from dataclasses import dataclass
from typing import Literal

import numpy as np

from gemo.extractors.audio import require_finite_rows
from gemo.extractors.base import Extractor, register
from gemo.files import sha256_file
from gemo.options import Options

# gemo.audio.openl3 imports torch: loaded on first use, so `gemo --help` stays quick.


def _openl3():
    from gemo.audio import openl3

    return openl3


@register
class OpenL3(Extractor):
    name = "openl3"
    version = 1
    description = ("OpenL3 audio embeddings (torchopenl3 weights) of 1 s windows, mono 48 kHz; "
                   "default mel256 / music / 6144-d every 0.5 s, as Fusical")

    @dataclass(frozen=True)
    class Params(Options):
        repr: Literal["linear", "mel128", "mel256"] = "mel256"  # the network's input spectrogram
        content: Literal["env", "music"] = "music"  # the videos the weights were trained on
        size: Literal[512, 6144] = 6144  # embedding dimensions
        hop: float = 0.5  # seconds between windows (each lasts 1 s, the network's input)
        center: bool = True  # window i centred on i * hop (half a window of zeros first)

        def check(self):  # hop in samples at 48 kHz must be at least 1
            return "hop must be at least 1/48000 s" if self.hop * 48000 < 1 else None

    libraries = ("torch", "av")
    modules = ("gemo.audio.openl3",)
    modality = "audio"
    uses_device = True

    def __init__(self, **params):
        from gemo import pretrained

        super().__init__(**params)
        p = self.params
        self.weights = _openl3().weights_name(p.repr, p.content, p.size)
        # Found now, so a missing file stops the run before any clip.
        self.weights_file = str(pretrained.find(self.weights))

    def info(self):
        openl3 = _openl3()
        return {"weights": self.weights, "weights_file": self.weights_file,
                "weights_sha256": sha256_file(self.weights_file), "sample_rate": openl3.SAMPLE_RATE,
                "window_seconds": openl3.WINDOW / openl3.SAMPLE_RATE}

    def load(self):
        if getattr(self, "_net", None) is None:  # built in the worker, not pickled
            p = self.params
            self._net = _openl3().load_openl3(p.repr, p.content, p.size, weights=self.weights_file,
                                              device=self.device)

    def compute(self, media):
        openl3 = _openl3()
        self.load()
        hop = round(self.params.hop * openl3.SAMPLE_RATE)
        windows = openl3.frame(media.audio(sample_rate=openl3.SAMPLE_RATE), hop=hop,
                               center=self.params.center)
        features = openl3.embed(self._net, windows, batch_size=self.batch_size)
        # Seconds at each window's centre.
        offset = 0 if self.params.center else openl3.WINDOW // 2
        timestamps = (np.arange(len(windows)) * hop + offset) / openl3.SAMPLE_RATE
        return {"features": require_finite_rows(features),
                "timestamps": timestamps.astype(np.float32)}

    def __getstate__(self):
        return {key: value for key, value in self.__dict__.items() if key != "_net"}
