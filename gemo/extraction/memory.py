"""How a process that extracts clip after clip keeps its heap (glibc; elsewhere nothing is done).

Each clip allocates about the same few hundred MB again (decoded frames, network
activations, summed-area tables). glibc's defaults hand large blocks back to the system as
soon as they are freed, and ``malloc_trim`` after each clip handed back the rest: the next
clip then faulted every page in anew, 42,000 page faults and 0.1 s of system time a clip.
So, from a process's first :func:`release_memory` on (after its first clip):

- blocks up to :data:`HEAP_BLOCK` come from the heap, never from a mapping of their own;
- freed heap is kept for the next clip up to :data:`KEPT`, and trimmed beyond it
  (:func:`release_memory`), which bounds the growth that the fragmenting buffers of face
  detection caused without any trim (a worker from 0.75 to 1.05 GB over 100 clips).

See docs/performance.md for the figures.
"""

import ctypes

HEAP_BLOCK = 256 * 2**20
KEPT = 256 * 2**20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (malloc.h)


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def _glibc():
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, musl): its allocator is left as it is
        return None
    if not all(hasattr(libc, name) for name in ("malloc_trim", "mallopt", "mallinfo2")):
        return None  # glibc before 2.33
    libc.mallinfo2.restype = _MallInfo2
    return libc


_LIBC = _glibc()
_fixed = False  # whether this process's thresholds are set (only processes that extract)
_left = 0  # free heap just after the last trim: its pages went back, glibc still counts it free


def free_heap():
    """Bytes of heap this process freed and still holds (0 where not known)."""
    return _LIBC.mallinfo2().fordblks if _LIBC is not None else 0


def release_memory():
    """Hand freed heap back to the system once more than :data:`KEPT` was freed since the
    last time; below that it is kept for the next clip. Returns whether it trimmed."""
    global _fixed, _left
    if _LIBC is None:
        return False
    if not _fixed:
        # Fixed thresholds (setting them turns off glibc's adjusting of both): the heap's
        # top is trimmed only past KEPT, by glibc itself or below.
        _LIBC.mallopt(_M_MMAP_THRESHOLD, HEAP_BLOCK)
        _LIBC.mallopt(_M_TRIM_THRESHOLD, KEPT)
        _fixed = True
    if free_heap() - _left <= KEPT:
        return False
    _LIBC.malloc_trim(0)
    _left = free_heap()
    return True
