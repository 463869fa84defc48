"""Keeping the process's resident memory flat while large bodies stream through it.

Every Arrow IPC message of an upload passes through a freshly allocated buffer of a few MiB.
glibc's malloc raises its mmap threshold each time such a block is freed, after which blocks of
that size come from the heap and freed ones are kept rather than returned: resident memory then
grows with the upload although nothing is live. Fixing the threshold keeps large blocks in
mmap, returned to the system the moment they are freed.

Arrow buffers (Flight uploads) come from pyarrow's default pool, mimalloc, which keeps freed
segments for reuse: over a multi-gigabyte upload that alone adds hundreds of MB. The system
allocator, with the fixed threshold above, gives them back (2 GB Flight upload: peak RSS ~945 MB
with mimalloc, 520 to 750 MB across runs without it). Realigned Flight columns have a pool of
their own (see :mod:`arrowport.flight.alignment`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

import pyarrow as pa

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


def keep_memory_flat() -> None:
    """Both settings above; an explicit ``ARROW_DEFAULT_MEMORY_POOL`` is respected."""
    if return_large_blocks_to_the_system() and "ARROW_DEFAULT_MEMORY_POOL" not in os.environ:
        pa.set_memory_pool(pa.system_memory_pool())
