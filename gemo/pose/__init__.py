"""Multi-person pose: detectors that return boxes, scores and 17 COCO keypoints per person.

The keypoint names live here, not in :mod:`gemo.pose.detect` (which loads torch), so that the
per-frame summary (:mod:`gemo.pose.summary`) needs numpy only.
"""

# COCO person keypoints, in the order both detectors return them.
KEYPOINTS = ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder",
             "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
             "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle")
