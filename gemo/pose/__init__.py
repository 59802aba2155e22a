"""Multi-person pose: detectors that return boxes, scores and 17 COCO keypoints per person.

The keypoint names and the skeleton live here, not in :mod:`gemo.pose.detect` (which loads
torch), so that the per-frame summary (:mod:`gemo.pose.summary`) and the CLI need numpy only.
"""

# COCO person keypoints, in the order both detectors return them.
KEYPOINTS = ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder",
             "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
             "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle")

# COCO's person skeleton: the 19 limbs drawn between keypoints, as indices into KEYPOINTS.
SKELETON = tuple((KEYPOINTS.index(a), KEYPOINTS.index(b)) for a, b in (
    ("left_ankle", "left_knee"), ("left_knee", "left_hip"), ("right_ankle", "right_knee"),
    ("right_knee", "right_hip"), ("left_hip", "right_hip"), ("left_shoulder", "left_hip"),
    ("right_shoulder", "right_hip"), ("left_shoulder", "right_shoulder"),
    ("left_shoulder", "left_elbow"), ("right_shoulder", "right_elbow"),
    ("left_elbow", "left_wrist"), ("right_elbow", "right_wrist"), ("left_eye", "right_eye"),
    ("nose", "left_eye"), ("nose", "right_eye"), ("left_eye", "left_ear"),
    ("right_eye", "right_ear"), ("left_ear", "left_shoulder"), ("right_ear", "right_shoulder")))

# Keypoints less sure than this are neither drawn, joined, counted as sure, nor summarised.
MIN_CONFIDENCE = 0.5
