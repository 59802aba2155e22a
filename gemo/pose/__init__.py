"""Multi-person pose: detectors that return boxes, scores and 17 COCO keypoints per person."""

# Keypoints less sure than this are neither drawn nor joined nor counted as sure (gemo inspect).
MIN_CONFIDENCE = 0.5
