"""Cartoon faces with a facial expression, for the synthetic dataset's face cue.

Drawn with PIL: skin oval, hair, eyes with pupils, brows, nose and a mouth whose
shape carries the expression. MTCNN finds these faces and the FER model reads
a smile as happy, a flat mouth mostly as neutral, and a frown with slanted
brows as sad or angry, which is what the face modality of `gemo demo` learns from.

>>> rgb, mask = draw_face("happy", size=56)
>>> rgb.shape, mask.shape
((56, 56, 3), (56, 56))
"""

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

EXPRESSIONS = ("happy", "neutral", "sad", "angry")
# The expression a class's faces show (sad reads more clearly than angry at this size).
CLASS_EXPRESSIONS = ("happy", "neutral", "sad")


def draw_face(expression, *, size, skin=(224, 180, 150), hair=(60, 40, 30)):
    """RGB uint8 ``(size, size, 3)`` face and a bool mask of where it is drawn."""
    if expression not in EXPRESSIONS:
        raise ValueError(f"unknown expression {expression!r}; use one of {EXPRESSIONS}")
    s = 4 * size  # drawn large, then shrunk: smooth edges
    image = Image.new("RGB", (s, s), (0, 0, 0))
    alpha = Image.new("L", (s, s), 0)
    d, a = ImageDraw.Draw(image), ImageDraw.Draw(alpha)
    c = s / 2
    oval = [c - 0.40 * s, c - 0.48 * s, c + 0.40 * s, c + 0.48 * s]
    d.ellipse(oval, fill=skin)
    a.ellipse(oval, fill=255)
    d.chord([c - 0.42 * s, c - 0.52 * s, c + 0.42 * s, c - 0.02 * s], 180, 360, fill=hair)
    dark, line = (40, 30, 20), max(1, int(0.035 * s))
    for side in (-1, 1):
        ex = c + side * 0.16 * s
        d.ellipse([ex - 0.075 * s, c - 0.12 * s, ex + 0.075 * s, c - 0.03 * s], fill=(250, 250, 250))
        d.ellipse([ex - 0.033 * s, c - 0.105 * s, ex + 0.033 * s, c - 0.045 * s], fill=dark)
        inner, outer = ex - side * 0.09 * s, ex + side * 0.09 * s
        if expression == "angry":  # inner ends down
            d.line([inner, c - 0.14 * s, outer, c - 0.22 * s], fill=dark, width=line)
        elif expression == "sad":  # inner ends up
            d.line([inner, c - 0.22 * s, outer, c - 0.16 * s], fill=dark, width=line)
        else:
            d.line([inner, c - 0.19 * s, outer, c - 0.19 * s], fill=dark, width=line)
    d.polygon([(c, c), (c - 0.055 * s, c + 0.14 * s), (c + 0.055 * s, c + 0.14 * s)], fill=(200, 150, 120))
    if expression == "happy":  # open smile with teeth
        d.chord([c - 0.19 * s, c + 0.13 * s, c + 0.19 * s, c + 0.37 * s], 0, 180, fill=(150, 40, 50))
        d.rectangle([c - 0.14 * s, c + 0.25 * s, c + 0.14 * s, c + 0.28 * s], fill=(255, 255, 255))
    elif expression == "neutral":
        d.line([c - 0.14 * s, c + 0.3 * s, c + 0.14 * s, c + 0.3 * s], fill=(120, 40, 40), width=line)
    else:  # frown
        d.arc([c - 0.17 * s, c + 0.26 * s, c + 0.17 * s, c + 0.46 * s], 200, 340, fill=(120, 40, 40),
              width=line)
    image = image.filter(ImageFilter.GaussianBlur(s / 160)).resize((size, size), Image.Resampling.LANCZOS)
    alpha = alpha.resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(image), np.asarray(alpha) > 127
