"""Fusical's per-frame pose vector (Fusical 2020, section 4.2), from the ``pose`` set's arrays.

Fusical kept OpenPose's body keypoints (face and foot points dropped), scaled each person's
keypoints into 0..1 keeping their relative distances, averaged them over the persons of the
frame and appended the person count. With COCO's 17 keypoints the body points are the 12
from the shoulders down (COCO has no neck or mid-hip point): 12 x (x, y) + 1 = 25 values.

Per person, only keypoints with a confidence of at least ``min_confidence`` count: the
person's smallest x and y over them are subtracted, and x and y are divided by the same
scale, the larger of the person's width and height over them. A keypoint of a frame is the
mean over the persons that have it; 0 when none has it, so an empty frame gives zeros and a
count of 0, never NaN.

>>> points = np.zeros((1, 17, 3), np.float32)          # one person, two confident keypoints
>>> points[0, KEYPOINTS.index("left_shoulder")] = (10, 20, 0.9)
>>> points[0, KEYPOINTS.index("right_hip")] = (30, 60, 0.9)
>>> features = frame_features(points, np.array([0]), 2)  # the person in frame 0 of 2
>>> names = feature_names()
>>> features.shape, len(names)
((2, 25), 25)
>>> [float(features[0, names.index(n)]) for n in ("right_hip_x", "right_hip_y", "persons")]
[0.5, 1.0, 1.0]
>>> bool(features[1].any())                            # frame 1: nobody
False
"""

import numpy as np

from gemo.pose import KEYPOINTS

BODY = KEYPOINTS[KEYPOINTS.index("left_shoulder"):]  # shoulders, elbows, wrists, hips, knees, ankles
_BODY_INDEX = [KEYPOINTS.index(name) for name in BODY]


def feature_names():
    """``left_shoulder_x``, ``left_shoulder_y``, ... ``right_ankle_y``, ``persons`` (25)."""
    return [f"{name}_{axis}" for name in BODY for axis in "xy"] + ["persons"]


def normalise(keypoints, *, min_confidence=0.5):
    """Each person's body keypoints scaled into 0..1, and which of them are confident.

    ``keypoints`` [n, 17, 3] (x, y, confidence) gives ``xy`` [n, 12, 2] and ``confident``
    [n, 12]; keypoints that are not confident are 0 in ``xy``. A person with one confident
    keypoint (no extent) has it at (0, 0).
    """
    body = np.asarray(keypoints, np.float64).reshape(-1, len(KEYPOINTS), 3)[:, _BODY_INDEX]
    confident = body[..., 2] >= min_confidence
    xy, mask = body[..., :2], confident[..., None]
    any_point = confident.any(axis=1)
    low = np.where(mask, xy, np.inf).min(axis=1)
    extent = (np.where(mask, xy, -np.inf).max(axis=1) - low).max(axis=1)
    scale = np.where(any_point & (extent > 0), extent, 1.0)  # nobody, or one point: no scaling
    return np.where(mask, (xy - low[:, None]) / scale[:, None, None], 0.0), confident


def frame_features(keypoints, frame_index, n_frames, *, min_confidence=0.5):
    """Fusical's 25 values for each of ``n_frames`` frames, float32 [n_frames, 25].

    ``keypoints`` [n, 17, 3] and ``frame_index`` [n] are the ``pose`` set's arrays: every
    person of every frame and the frame it is in. The last value is the frame's person count.
    """
    frame_index = np.asarray(frame_index, np.intp)
    xy, confident = normalise(keypoints, min_confidence=min_confidence)
    sums = np.zeros((n_frames, len(BODY), 2))
    have = np.zeros((n_frames, len(BODY)))
    np.add.at(sums, frame_index, xy)
    np.add.at(have, frame_index, confident)
    means = sums / np.maximum(have, 1)[..., None]  # 0 where no person has the keypoint
    persons = np.bincount(frame_index, minlength=n_frames)
    return np.concatenate([means.reshape(n_frames, -1), persons[:, None]], axis=1).astype(np.float32)
