"""``frames``: K RGB frames per clip, evenly spaced in time (Pinto 2020 used 10 over 5 s)."""

from dataclasses import dataclass

from gemo.extractors.base import Extractor, register
from gemo.options import Options


@register
class Frames(Extractor):
    name = "frames"
    version = 2  # 2: frames of rotated videos are turned upright
    description = "K frames evenly spaced in time, squashed to size x size, uint8 RGB"

    @dataclass(frozen=True)
    class Params(Options):
        count: int = 10
        size: int = 224

        def check(self):
            return "count and size must be positive" if min(self.count, self.size) < 1 else None

    libraries = ("av",)
    modality = "scene"

    def frame_counts(self):
        return (self.params.count,)

    def compute(self, media):
        frames, timestamps = media.frames(count=self.params.count, size=self.params.size)
        return {"frames": frames, "timestamps": timestamps}
