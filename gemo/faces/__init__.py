"""Faces: detection (MTCNN), alignment, and facial-expression recognition (mini-XCEPTION)."""
