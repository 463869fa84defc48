"""The locks that serialise writes within one process.

DuckDB lets concurrent transactions append to the same table; what it does not allow is two
transactions creating or replacing the same table, so DDL on a table is serialised by a
per-table lock (``t:<table>``) held until the transaction ends. Writes of the same idempotency
key or producer are serialised too, by one of :data:`DELIVERY_STRIPES` locks the key hashes to
(``d:<stripe>``; a lock per key ever seen would grow without bound).

A write waiting for a lock behind a long one (a large upload still arriving) looks every
:data:`CHECK_SECONDS` whether its client has given up, and then stops waiting: otherwise a
cancelled upload would hold its thread and streaming slot until the other write ended.
"""

from __future__ import annotations

import contextlib
import threading
import zlib
from collections.abc import Iterator, Sequence

from arrowport.errors import TruncatedStream
from arrowport.storage.writes import LocksBusy, WriteJob

# Delivery keys share this many locks; two keys on one stripe merely wait for each other.
DELIVERY_STRIPES = 1024
# How often a write waiting for a lock looks whether its client has given up on it.
CHECK_SECONDS = 0.1


def delivery_lock_name(key: str) -> str:
    """The name of the stripe lock a delivery key (idempotency key, producer) hashes to."""
    return f"d:{zlib.crc32(key.encode()) % DELIVERY_STRIPES}"


def table_lock_name(table: str) -> str:
    return f"t:{table.lower()}"


def abandoned(jobs: Sequence[WriteJob]) -> bool:
    """Whether the client of any of ``jobs`` has given up on it."""
    return any(job.abandoned is not None and job.abandoned() for job in jobs)


class WriteLocks:
    """Locks by name (see the module's docstring), created as they are first needed."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._tables: dict[str, threading.Lock] = {}
        self._stripes = [threading.Lock() for _ in range(DELIVERY_STRIPES)]

    @contextlib.contextmanager
    def holding(self, names: set[str], jobs: Sequence[WriteJob], block: bool) -> Iterator[None]:
        """Hold every lock in ``names`` (taken in order, so two writes never wait for each
        other) while the block runs. ``block=False``: :class:`LocksBusy` at once, naming the
        ones another write holds; otherwise wait for them until a client of ``jobs`` gives up
        (:class:`TruncatedStream`)."""
        with contextlib.ExitStack() as held:
            busy = set()
            for name in sorted(names):
                lock = self._lock(name)
                if _acquire(lock, block, jobs):
                    held.callback(lock.release)
                else:
                    busy.add(name)
            if busy:
                raise LocksBusy(busy)
            yield

    def _lock(self, name: str) -> threading.Lock:
        kind, _, rest = name.partition(":")
        if kind == "d":
            return self._stripes[int(rest)]
        with self._guard:
            return self._tables.setdefault(name.lower(), threading.Lock())


def _acquire(lock: threading.Lock, block: bool, jobs: Sequence[WriteJob]) -> bool:
    if not block:
        return lock.acquire(blocking=False)
    while not lock.acquire(timeout=CHECK_SECONDS):
        if abandoned(jobs):
            raise TruncatedStream(
                "the client cancelled the upload while it waited for another write to the "
                "table; nothing was written"
            )
    return True
