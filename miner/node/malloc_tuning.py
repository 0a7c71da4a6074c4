"""Give memory back after a large request.

glibc's malloc serves a large block (a 16 MiB request body) from its own mapping and unmaps it
when freed, but it then raises its mapping threshold to that size, and its trim threshold to
twice it, so every later large block comes from the heap, and the heap is not returned: a node
that once read a large body stays that much larger for the rest of its life. Fixing both
thresholds (mallopt(3); setting them turns the adjustment off) keeps a large block a mapping of
its own, returned when freed. Elsewhere than glibc this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 256 * 1024  # blocks from here up get a mapping of their own
TRIM_THRESHOLD = 1024 * 1024  # free heap above this at the top is returned


def return_large_blocks() -> bool:
    """True when the thresholds were set (glibc), False where there is no mallopt."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
