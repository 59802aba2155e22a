"""``faces``: detected faces in K frames per clip, with five landmarks and aligned crops.

Frames are taken like ``frames`` (centres of K equal slices) but at their
stored resolution, so faces keep their shape and size; detection runs on a
copy scaled to ``max_side`` and crops are cut from the full frame. Faces under
``min_face_size`` pixels are dropped (Fusical: smaller faces were mostly
misread and slowed everything down); at most ``max_faces`` per frame are kept,
the largest first. A clip without any face is a valid result (n = 0).
"""

from dataclasses import dataclass

import numpy as np

from gemo.extractors.base import DetectorSet, register, stack_frames
from gemo.faces.align import align_face
from gemo.options import Options

# gemo.faces.detect imports torch (2 s): loaded on first use, so `gemo --help` stays quick.


@register
class Faces(DetectorSet):
    name = "faces"
    # 2: frames of rotated videos are turned upright; 3: channels-last MTCNN; 4: gemo's own
    # MTCNN cascade (same boxes up to float rounding), frames scaled for detection by the
    # decoder (area) instead of Pillow (bilinear), crops warped from the sampled region only
    version = 4
    description = ("faces in K evenly spaced frames: boxes, scores, 5 landmarks, aligned "
                   "crop_size x crop_size uint8 RGB crops (ArcFace template)")

    @dataclass(frozen=True)
    class Params(Options):
        count: int = 5  # frames per clip
        detector: str = "mtcnn"
        min_face_size: int = 40  # pixels of the original frame
        max_side: int = 640  # detection on frames scaled to this longer side; 0: full size
        max_faces: int = 16  # per frame, largest first; 0: all
        crop_size: int = 112

        def check(self):
            if min(self.count, self.min_face_size, self.crop_size) < 1:
                return "count, min_face_size and crop_size must be positive"
            if min(self.max_side, self.max_faces) < 0:
                return "max_side and max_faces must be >= 0 (0: no limit)"
            return None

    libraries = ("av", "torch", "facenet-pytorch", "pillow")
    modality = "face"
    modules = ("gemo.faces.mtcnn", "gemo.faces.mtcnn_nets", "gemo.faces.detect")

    def _create_detector(self):
        from gemo.faces.detect import create_detector

        return create_detector(
            self.params.detector, min_face_size=self.params.min_face_size,
            max_side=self.params.max_side, device=self.device, batch_size=self.batch_size)

    def info(self):
        from gemo.faces.detect import LANDMARKS

        return {"landmarks": list(LANDMARKS), "detector": self.detector().describe(),
                "crop_template": "ArcFace 5-point, 112 x 112 scaled to crop_size"}

    def compute(self, media):
        count = self.params.count
        frames, timestamps = media.frames(count=count, max_side=0)
        # The decoder scales the same frames for detection (area averaging), faster than PIL.
        small = (media.frames(count=count, max_side=self.params.max_side)[0]
                 if self.params.max_side else frames)
        found = self.detector().detect(list(frames), scaled=list(small))
        cap, size = self.params.max_faces, self.params.crop_size
        kept = [faces[:cap] if cap > 0 else faces for faces in found]
        crops = [align_face(frame, points, size=size)
                 for frame, faces in zip(frames, kept) for points in faces.landmarks]
        return {
            **stack_frames(kept, {"boxes": (4,), "scores": (), "landmarks": (5, 2)}),
            "crops": (np.stack(crops) if crops else np.zeros((0, size, size, 3), np.uint8)),
            "timestamps": timestamps,
        }
