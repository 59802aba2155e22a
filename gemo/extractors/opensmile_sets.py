"""openSMILE feature sets: ``egemaps`` (88 eGeMAPSv02 functionals) and ``compare-lld``."""

import numpy as np

from gemo.extractors.audio import AudioParams, require_finite_rows
from gemo.extractors.base import Extractor, register


class _OpenSmile(Extractor):
    feature_set = ""
    feature_level = ""
    Params = AudioParams
    libraries = ("opensmile", "av")
    modules = ("gemo.audio.smile",)  # opensmile, warmed up once for all workers
    modality = "audio"

    @property
    def _smile(self):
        # Built on first use: extractors are pickled to worker processes, the Smile object is not.
        if getattr(self, "_smile_object", None) is None:
            from gemo.audio import smile

            self._smile_object = smile.create(self.feature_set, self.feature_level)
        return self._smile_object

    def __getstate__(self):
        return {key: value for key, value in self.__dict__.items() if key != "_smile_object"}

    def load(self):
        self._smile  # noqa: B018  (builds the openSMILE extractor)

    def info(self):
        return {"feature_names": list(self._smile.feature_names)}

    def compute(self, media):
        rate = self.params.sample_rate
        signal = media.audio(sample_rate=rate)
        values = self._smile.process_signal(signal, rate).to_numpy(dtype=np.float32)
        return {"features": require_finite_rows(self._shape(values))}

    def _shape(self, values):
        return values


@register
class EGeMAPS(_OpenSmile):
    name = "egemaps"
    description = "openSMILE eGeMAPSv02 functionals, 88 values per clip, mono 16 kHz"
    feature_set = "eGeMAPSv02"
    feature_level = "Functionals"

    def _shape(self, values):
        return values.reshape(-1)  # one row of functionals per clip


@register
class ComParELLD(_OpenSmile):
    name = "compare-lld"
    description = "openSMILE ComParE_2016 low-level descriptors, 65 per 10 ms frame, mono 16 kHz"
    feature_set = "ComParE_2016"
    feature_level = "LowLevelDescriptors"
