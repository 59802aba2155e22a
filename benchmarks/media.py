"""The benchmarks' view of a folder of real clips: which videos, how many seconds."""

import av

from gemo.data.index import VIDEO_EXTENSIONS


def videos(folder, match="*"):
    """The video files directly in ``folder`` whose name matches the glob ``match``, sorted."""
    return sorted(p for p in folder.iterdir()
                  if p.suffix.lower() in VIDEO_EXTENSIONS and p.match(match))


def media_seconds(paths):
    """Total duration of ``paths`` in seconds, from the containers."""
    total = 0.0
    for path in paths:
        with av.open(str(path)) as container:
            total += container.duration / av.time_base
    return total
