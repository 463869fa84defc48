"""Keeping the process's resident memory flat while large bodies stream through it.

Every Arrow IPC message of an upload passes through a freshly allocated buffer of a few MiB.
glibc's malloc raises its mmap threshold each time such a block is freed, after which blocks of
that size come from the heap and freed ones are kept rather than returned: resident memory then
grows with the upload although nothing is live. Fixing the threshold keeps large blocks in
mmap, returned to the system the moment they are freed.
"""

from __future__ import annotations

import ctypes
import ctypes.util

_M_MMAP_THRESHOLD = -3
LARGE_BLOCK_BYTES = 256 * 1024


def return_large_blocks_to_the_system() -> bool:
    """Fix glibc's mmap threshold; False where the C library is not glibc (nothing to do)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, LARGE_BLOCK_BYTES))
