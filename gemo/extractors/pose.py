"""``pose``: persons and their 17 COCO keypoints in K frames per clip, and Fusical's 25
values per frame (``features`` [K, 25], :mod:`gemo.pose.summary`) that `gemo train pose` reads.

Frames are taken like ``faces`` (centres of K equal slices; the one decode of a clip is
shared through :meth:`frame_counts`), detected on at most ``max_side`` pixels, and boxes
and keypoints are stored in pixels of the full frame. At most ``max_persons``
per frame are kept, the largest box first. A frame without anyone is a valid result:
its count is 0 and it adds no rows (never NaN).
"""

from dataclasses import dataclass

from gemo.extractors.base import DetectorSet, register, stack_frames
from gemo.options import Options
from gemo.pose import KEYPOINTS, summary

# gemo.pose.detect imports torch (2 s): loaded on first use, so `gemo --help` stays quick.


@register
class Pose(DetectorSet):
    name = "pose"
    version = 3  # 2: features, Fusical's per-frame pose vector; 3: detection at max_side
    description = ("persons in K evenly spaced frames: boxes, scores and 17 COCO keypoints "
                   "(x, y, confidence) in pixels of the frame; per frame the 12 body keypoints "
                   "scaled per person, averaged over persons, + person count (Fusical)")

    @dataclass(frozen=True)
    class Params(Options):
        count: int = 5  # frames per clip
        detector: str = "yolo"  # yolo needs `pip install 'gemo[pose]'`; or keypointrcnn
        threshold: float = 0.5  # persons scoring less are dropped
        max_persons: int = 16  # per frame, largest first; 0: all
        min_confidence: float = 0.5  # keypoints less sure are left out of the features
        max_side: int = 640  # detection on frames scaled to this longer side; 0: full size

        def check(self):
            if self.count < 1:
                return "count must be positive"
            if not 0.0 <= self.threshold <= 1.0 or not 0.0 <= self.min_confidence <= 1.0:
                return "threshold and min_confidence must be within 0..1"
            if self.max_persons < 0 or self.max_side < 0:
                return "max_persons and max_side must be >= 0 (0: no limit)"
            return None

    libraries = ("av", "torch", "torchvision", "ultralytics")
    modality = "pose"
    # ultralytics is optional: the fork server skips a missing module, but the test that
    # every listed module imports would not, so only the always-installed ones are listed.
    # torchvision is left out: yolo runs without it (see YOLODetector), and importing it
    # costs 1.1 s of start-up; keypointrcnn imports it in each worker.
    modules = ("gemo.pose.detect",)

    def _create_detector(self):
        from gemo.pose.detect import create_detector

        return create_detector(self.params.detector, threshold=self.params.threshold,
                               device=self.device, batch_size=self.batch_size)

    def info(self):
        return {"keypoints": list(KEYPOINTS), "feature_names": summary.feature_names(),
                "detector": self.detector().describe()}

    def compute(self, media):
        count, max_side = self.params.count, self.params.max_side
        # YOLO letterboxes every image to 640 pixels anyway: frames the decoder scaled (the
        # faces set's, shared) save converting and resizing full-size ones, 1.3x here.
        frames, timestamps = media.frames(count=count, max_side=max_side)
        height, width = media.frame_size(count=count)
        back = (width / frames.shape[2], height / frames.shape[1])  # to the full frame's pixels
        cap = self.params.max_persons
        kept = [(persons[:cap] if cap > 0 else persons).scaled(back)
                for persons in self.detector().detect(list(frames))]
        arrays = stack_frames(kept, {"boxes": (4,), "scores": (), "keypoints": (17, 3)})
        features = summary.frame_features(arrays["keypoints"], arrays["frame_index"], len(kept),
                                          min_confidence=self.params.min_confidence)
        return {**arrays, "timestamps": timestamps, "features": features}
