"""``frames``: K RGB frames per clip, evenly spaced in time (Pinto 2020 used 10 over 5 s)."""

from gemo.extractors.base import Extractor, register


@register
class Frames(Extractor):
    name = "frames"
    version = 2  # 2: frames of rotated videos are turned upright
    description = "K frames evenly spaced in time, squashed to size x size, uint8 RGB"
    defaults = {"count": 10, "size": 224}
    libraries = ("av",)
    modality = "scene"

    def frame_counts(self):
        return (self.params["count"],)

    def compute(self, media):
        frames, timestamps = media.frames(count=self.params["count"], size=self.params["size"])
        return {"frames": frames, "timestamps": timestamps}
