"""Group-size buckets (Pinto 2020, Table VI): small groups have fewer than 5 faces per frame."""

import json

from gemo.errors import GemoError

GROUP_SIZES_FILE = "group_sizes.json"
SMALL_BELOW = 5.0  # mean detected faces per frame; < 5 is a small group
BUCKETS = ("small", "large")


def load_group_sizes(*, workspace, group_sizes=None):
    """``{clip id: mean faces per frame}`` from ``group_sizes`` or ``<workdir>/group_sizes.json``.

    The file is a JSON object mapping clip ids to numbers, written by the faces
    feature set: ``{"1_1": 3.4, "1_2": 7.0}``.
    """
    if group_sizes is None:
        path = workspace.root / GROUP_SIZES_FILE
        if not path.exists():
            raise GemoError(
                f"no group sizes: {path} is missing; extract the faces feature set first "
                "(it writes the mean number of faces per frame of every clip)"
            )
        try:
            group_sizes = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise GemoError(f"{path}: not valid JSON ({error})") from None
        source = path
    else:
        source = "group_sizes"
    if not isinstance(group_sizes, dict):
        raise GemoError(f"{source}: expected a mapping of clip id to mean faces per frame")
    sizes = {}
    for clip_id, value in group_sizes.items():
        try:
            sizes[str(clip_id)] = float(value)
        except (TypeError, ValueError):
            raise GemoError(f"{source}: group size of {clip_id!r} is not a number: {value!r}") from None
    return sizes


def bucket(size):
    """``"small"`` below 5 faces per frame, ``"large"`` otherwise.

    >>> bucket(4.9), bucket(5)
    ('small', 'large')
    """
    return "small" if size < SMALL_BELOW else "large"
