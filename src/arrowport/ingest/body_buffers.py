"""Reusable buffers for the bodies of large IPC messages.

Every large message of an upload lands in a buffer of its own, which Arrow's batches then point
into until DuckDB has inserted them. Allocated fresh each time, such a buffer (a few MiB, above
glibc's mmap threshold: see :mod:`arrowport.memory`) is faulted in page by page and handed back
to the system when freed: on 2 cores that was ~17 ms of every 40 MB received, as much as
copying the bytes four times over (profiled on a 1M-row Flight put; the realigning copy of each
body was a seventh of the put's time). So bodies of at least :data:`POOLED_BYTES` are read into
blocks that are kept for the next message once Arrow lets go of them: at most
``keep_bytes`` of free blocks, the most recently freed first.

A block is lent with :func:`pyarrow.foreign_buffer`, whose ``base`` is a lease object: the block
goes back to the pool only when the last Arrow buffer that points into it is gone, whichever
thread drops it.

    >>> pool = BodyBuffers(keep_bytes=8 * 1024**2)
    >>> body = pool.copy(memoryview(b"x" * 300_000))
    >>> bytes(body[:3]), len(body)
    (b'xxx', 300000)
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

import pyarrow as pa

# Smaller bodies come from glibc's heap, which keeps its free memory (see arrowport.memory).
POOLED_BYTES = 256 * 1024
# Blocks come in multiples of this, so that messages of one stream share blocks.
_GRAIN = 256 * 1024
# Free blocks kept: one statement's worth of a large upload (see storage.table_writer).
KEEP_BYTES = 64 * 1024**2


class BodyBuffers:
    """A pool of blocks for message bodies; thread-safe."""

    def __init__(self, keep_bytes: int = KEEP_BYTES) -> None:
        self._keep_bytes = keep_bytes
        self._free: deque[bytearray] = deque()
        self._free_bytes = 0
        self._lock = threading.Lock()
        # Blocks given back, not yet in the free list: a lease may die inside a garbage
        # collection that interrupts a thread holding the lock, so giving back takes no lock.
        self._returned: deque[bytearray] = deque()

    @property
    def free_bytes(self) -> int:
        with self._lock:
            self._collect_returned()
            return self._free_bytes

    def filled(self, size: int, fill: Callable[[memoryview], int]) -> memoryview:
        """A buffer of ``size`` bytes written by ``fill`` (which returns how many it wrote: the
        buffer is cut to that). The view keeps its block lent until nothing points into it."""
        block = self._take(size)
        with memoryview(block) as target:
            written = fill(target[:size])
        lease = _Lease(self, block)
        address = pa.py_buffer(block).address
        return memoryview(pa.foreign_buffer(address, written, base=lease)).cast("B")

    def copy(self, data: bytes | memoryview) -> memoryview:
        """``data`` in a pooled buffer (which, unlike a Python ``bytes``, starts aligned)."""

        def fill(target: memoryview) -> int:
            target[:] = data
            return len(data)

        return self.filled(len(data), fill)

    def _take(self, size: int) -> bytearray:
        capacity = -(-size // _GRAIN) * _GRAIN
        with self._lock:
            self._collect_returned()
            for index in range(len(self._free) - 1, -1, -1):
                if len(self._free[index]) == capacity:
                    block = self._free[index]
                    del self._free[index]
                    self._free_bytes -= capacity
                    return block
        return bytearray(capacity)

    def give_back(self, block: bytearray) -> None:
        """Return a block (any thread, any moment: a deque's append is atomic). Blocks beyond
        ``keep_bytes`` are freed now, unless the lock is held (then by the next take)."""
        self._returned.append(block)
        if self._lock.acquire(blocking=False):
            try:
                self._collect_returned()
            finally:
                self._lock.release()

    def _collect_returned(self) -> None:
        """Move given-back blocks to the free list, dropping the oldest beyond ``keep_bytes``;
        called with the lock held."""
        while self._returned:
            block = self._returned.popleft()
            self._free.append(block)
            self._free_bytes += len(block)
        while self._free_bytes > self._keep_bytes:
            self._free_bytes -= len(self._free.popleft())


class _Lease:
    """Returns its block to the pool when Arrow drops the last buffer that points into it."""

    __slots__ = ("_block", "_pool")

    def __init__(self, pool: BodyBuffers, block: bytearray) -> None:
        self._pool = pool
        self._block = block

    def __del__(self) -> None:
        self._pool.give_back(self._block)


# The server's pool: every upload's large bodies, whichever protocol brought them.
BODY_BUFFERS = BodyBuffers()
