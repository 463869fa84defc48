"""Keeping the process's resident memory flat while large bodies stream through it.

Every Arrow IPC message of an upload passes through a freshly allocated buffer of a few MiB.
glibc's malloc raises its mmap threshold each time such a block is freed, after which blocks of
that size come from the heap and freed ones are kept rather than returned: resident memory then
grows with the upload although nothing is live. Fixing the threshold keeps large blocks in
mmap, returned to the system the moment they are freed.

Arrow buffers (Flight uploads) come from pyarrow's default pool, mimalloc, which keeps freed
segments for reuse: over a multi-gigabyte upload that alone adds hundreds of MB. The system
allocator, with the fixed threshold above, gives them back (2 GB Flight upload: peak RSS ~945 MB
with mimalloc, 520 to 750 MB across runs without it). Large message bodies, and Flight's
realigned copies of them, have a pool of their own (see :mod:`arrowport.ingest.body_buffers`).

Smaller blocks stay on the heap. glibc shrinks it whenever 128 KiB at its top are free, so an
HTTP body's chunks (up to 256 KiB each, one after another) grew and shrank it for every chunk,
and faulting fresh pages in again cost a large binary ingest a fifth of its time (py-spy:
``brk`` and page faults on the event loop). The heap now keeps up to :data:`HEAP_KEEP_BYTES`
free at its top. gRPC's receive buffers (tens of KiB each, allocated and freed by different
threads) leave free holes inside the heap that glibc never hands back by itself; a large Flight
upload therefore calls :func:`release_free_heap` every so often. (A threshold low enough to move
those buffers to mmap as well, 64 KiB, costs HTTP a quarter of its throughput.)

Each of glibc's arenas keeps free memory of its own, and threads spread over up to eight arenas
a core: gRPC's, DuckDB's and the writers' threads then each held some. At most :data:`ARENAS`
arenas cut a 2 GB Flight put's peak from 604-612 to 583 MB, with no slowdown measured for
bulk puts or 16 concurrent writers.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Callable
from typing import Any, cast

import pyarrow as pa

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
LARGE_BLOCK_BYTES = 256 * 1024
HEAP_KEEP_BYTES = 64 * 1024**2
ARENAS = 2


def _glibc(name: str, *argtypes: type[ctypes._SimpleCData[Any]]) -> Callable[..., int] | None:
    """The C library's function ``name``, or None where the C library lacks it (not glibc)."""
    library = ctypes.util.find_library("c")
    if library is None:
        return None
    try:
        function = getattr(ctypes.CDLL(library), name)
    except (OSError, AttributeError):
        return None
    function.argtypes = list(argtypes)
    function.restype = ctypes.c_int
    return cast("Callable[..., int]", function)


_MALLOPT = _glibc("mallopt", ctypes.c_int, ctypes.c_int)
_MALLOC_TRIM = _glibc("malloc_trim", ctypes.c_size_t)


def tune_malloc() -> bool:
    """Fix glibc's mmap and trim thresholds and its number of arenas; False where the C
    library is not glibc (nothing to do)."""
    if _MALLOPT is None:
        return False
    return (
        bool(_MALLOPT(_M_MMAP_THRESHOLD, LARGE_BLOCK_BYTES))
        and bool(_MALLOPT(_M_TRIM_THRESHOLD, HEAP_KEEP_BYTES))
        and bool(_MALLOPT(_M_ARENA_MAX, ARENAS))
    )


def release_free_heap() -> None:
    """Hand the heap's free pages back to the system (glibc's ``malloc_trim``; elsewhere a no-op).

    Threads that allocate and free at different paces leave free holes inside glibc's heaps that
    it never returns on its own. A Flight upload's gRPC buffers do exactly that: over a 2 GB put,
    the free holes grew to 100-250 MB in some runs. Costs 5-40 ms, so call it every hundred MB or
    so of a large upload, not per batch.
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def keep_memory_flat() -> None:
    """glibc tuned as above, and Arrow on the system allocator (an explicit
    ``ARROW_DEFAULT_MEMORY_POOL`` is respected)."""
    if tune_malloc() and "ARROW_DEFAULT_MEMORY_POOL" not in os.environ:
        pa.set_memory_pool(pa.system_memory_pool())
