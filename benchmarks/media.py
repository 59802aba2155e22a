"""The benchmarks' view of a folder of real clips: which videos, how many seconds, and how
fast this machine decodes them right now."""

import os
import platform
import time

import av

from gemo.data.index import VIDEO_EXTENSIONS
from gemo.data.media import MediaError


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


def full_decode(path):
    """Decode every frame of every stream of ``path``, converting nothing."""
    with av.open(str(path)) as container:
        for _ in container.decode(*container.streams):
            pass


def timed(function, paths, repeat):
    """Best total seconds of ``repeat`` passes of ``function`` over ``paths``."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for path in paths:
            try:
                function(path)
            except MediaError:
                pass  # e.g. no audio stream: counted in time, reported separately
        best = min(best, time.perf_counter() - start)
    return best


def decode_probe(paths, *, passes=3):
    """Best seconds of ``passes`` full decodes of ``paths`` on one thread of this process.

    Shared machines slow down and speed up by a third from one minute to the next; a probe
    taken beside each measurement says which figures were measured on a machine of the same
    speed. Decoding is a fifth of a clip's work and slows with the rest.
    """
    return timed(full_decode, paths, passes)


def machine():
    """What this machine is: the CPU's model, its cores and the widest vector instructions
    torch uses. Two machines of the same kind here differed twofold in every set's speed, so
    figures are compared only between runs on the same CPU.

    >>> machine()                                                      # doctest: +SKIP
    {'cpu': 'AMD EPYC', 'cores': 2, 'torch_cpu': 'AVX2'}
    """
    import torch  # 2 s, so only when asked

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info
                       if line.startswith("model name"))
    except (OSError, StopIteration):
        pass  # not Linux: platform's answer
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_cpu": torch.backends.cpu.get_cpu_capability()}
