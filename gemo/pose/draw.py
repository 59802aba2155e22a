"""Persons drawn onto a picture: their boxes and COCO skeletons (``gemo inspect --pose --draw``).

>>> pen = PIL.ImageDraw.Draw(canvas)                            # doctest: +SKIP
>>> draw_persons(pen, persons, width=2)                          # doctest: +SKIP
"""

import numpy as np

from gemo.pose import KEYPOINTS, MIN_CONFIDENCE, SKELETON

BOX = (0, 230, 120)
LEFT, RIGHT, CENTRE = (0, 170, 255), (255, 60, 60), (255, 255, 255)  # the person's own sides (COCO)


def side_colour(index):
    """The colour of keypoint ``index``: its side of the body (nose: centre)."""
    name = KEYPOINTS[index]
    return LEFT if name.startswith("left") else RIGHT if name.startswith("right") else CENTRE


def draw_persons(pen, persons, *, width, min_confidence=MIN_CONFIDENCE):
    """Draw each person of ``persons`` (a :class:`~gemo.pose.detect.Persons`) on ``pen`` (a
    ``PIL.ImageDraw``): its box, the :data:`SKELETON` limbs whose two ends both have
    confidence >= ``min_confidence`` (a limb within one side in that side's colour, one across
    the body in the centre colour), and those keypoints as dots coloured by side."""
    radius = width + 1
    for box, points in zip(persons.boxes, persons.keypoints):
        pen.rectangle([float(v) for v in box], outline=BOX, width=max(1, width // 2))
        sure = points[:, 2] >= min_confidence
        for a, b in SKELETON:
            if sure[a] and sure[b]:
                colour = side_colour(a) if side_colour(a) == side_colour(b) else CENTRE
                pen.line([tuple(map(float, points[a, :2])), tuple(map(float, points[b, :2]))],
                         fill=colour, width=width)
        for index in np.flatnonzero(sure):
            x, y = (float(v) for v in points[index, :2])
            pen.ellipse([x - radius, y - radius, x + radius, y + radius], fill=side_colour(index))
