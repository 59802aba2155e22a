"""Group-size buckets (Pinto 2020, Table VI): small groups have fewer than 5 faces per frame."""

from gemo.cache.store import FeatureCache
from gemo.errors import GemoError

SMALL_BELOW = 5.0  # mean detected faces per frame; < 5 is a small group
BUCKETS = ("small", "large")


def load_group_sizes(*, workspace, group_sizes=None):
    """``{clip id: mean faces per frame}``: ``group_sizes`` if given, else from the faces cache.

    Pinto 2020 counted MTCNN faces on every frame; the ``faces`` feature set
    stores that count per sampled frame (``counts``).
    """
    source = "group_sizes"
    if group_sizes is None:
        path = workspace.cache_path("faces")
        if not path.exists():
            raise GemoError("no group sizes: extract the faces feature set first "
                            "(gemo extract --only faces), it counts the faces on every frame")
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
