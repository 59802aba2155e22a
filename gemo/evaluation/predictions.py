"""Prediction files in the VGAF label-file format."""

from gemo.files import write_text
from gemo.labels import vgaf_code

HEADER = "Vid_name Label"


def write_predictions(path, ids, classes):
    """Write ``Vid_name Label`` then ``<id> <1|2|3>`` per clip, sorted by id.

    The format of VGAF's own label files, so gemo's index reads it back.

    >>> write_predictions("predictions.txt", ["2_1", "1_1"], [2, 0])   # doctest: +SKIP
    # predictions.txt: "Vid_name Label\\n1_1 1\\n2_1 3\\n"
    """
    lines = [HEADER] + [f"{i} {vgaf_code(int(c))}" for i, c in sorted(zip(ids, classes))]
    write_text(path, "\n".join(lines) + "\n")
    return path
