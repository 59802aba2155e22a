"""Group-size buckets (Pinto 2020, Table VI): small groups have fewer than 5 faces per frame.

The count per frame comes from a cache: ``faces`` (detected faces, as Pinto 2020 counted)
or ``pose`` (detected persons, who need not face the camera).
"""

from gemo.cache.store import FeatureCache
from gemo.errors import GemoError

SMALL_BELOW = 5.0  # mean detected faces (or persons) per frame; < 5 is a small group
BUCKETS = ("small", "large")
COUNTERS = {"faces": "faces", "pose": "persons"}  # cache -> what its per-frame counts count


def load_group_sizes(*, workspace, group_sizes=None, counter="faces"):
    """``{clip id: mean count per frame}``: ``group_sizes`` if given, else from the ``counter``
    cache (``faces`` or ``pose``), whose ``counts`` array holds the faces or persons found in
    each sampled frame.
    """
    if counter not in COUNTERS:
        raise GemoError(f"unknown group-size counter {counter!r}; use one of {', '.join(COUNTERS)}")
    source = "group_sizes"
    if group_sizes is None:
        path = workspace.cache_path(counter)
        if not path.exists():
            raise GemoError(f"no group sizes: extract the {counter} feature set first "
                            f"(gemo extract --only {counter}), it counts the {COUNTERS[counter]} "
                            "on every frame")
        with FeatureCache(path) as cache:
            group_sizes = {i: cache.read(i, names=("counts",))["counts"].mean() for i in cache.ids()}
        source = path
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
