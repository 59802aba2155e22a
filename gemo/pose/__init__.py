"""Multi-person pose: detectors that return boxes, scores and 17 COCO keypoints per person."""
