"""Class names and the VGAF label encoding, in one place."""

CLASSES = ("Positive", "Neutral", "Negative")
N_CLASSES = len(CLASSES)

# VGAF label files use 1 = Positive, 2 = Neutral, 3 = Negative.
_VGAF_CODES = {"1": 0, "2": 1, "3": 2}


def parse_label(value):
    """Return the class index (0, 1, 2) for a label given as a name or a VGAF code.

    Empty strings and None mean "unlabelled" and give None.

    >>> parse_label("3"), parse_label("positive"), parse_label("")
    (2, 0, None)
    """
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    if text in _VGAF_CODES:
        return _VGAF_CODES[text]
    for index, name in enumerate(CLASSES):
        if text.lower() == name.lower():
            return index
    raise ValueError(
        f"unknown label {text!r}: expected 1/2/3 (VGAF) or one of {', '.join(CLASSES)}"
    )


def vgaf_code(index):
    """VGAF code (1, 2, 3) of a class index (0, 1, 2)."""
    return index + 1
