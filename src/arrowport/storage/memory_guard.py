"""Stopping the running queries when the server's memory passes its bound.

The read guard refuses the direct ways a query makes DuckDB build huge values (long literals,
nested ``repeat``), but no check of a query's text bounds what functions composed together make
(``concat`` of many long literals, a value built in a CTE and repeated outside it), and DuckDB
counts only its buffer manager's memory against ``memory_limit``, not the values a query
computes. Such a query grew the server by gigabytes ahead of its reader, until the kernel
killed the process, and every ingest with it.

So while queries run, :class:`MemoryGuard` reads the process's resident memory every
:data:`SAMPLE_SECONDS`; past ``limits.max_server_memory_bytes`` it stops every query running (it
cannot tell which one took the memory: their memory is the process's), each failing 503
``out_of_memory``, and hands the freed heap back to the system once they are over. A query
that starts while the memory is past the bound first waits up to :data:`ROOM_WAIT_SECONDS` for
it to come back (DuckDB's allocator gives freed pages back within a second or two): started at
once, it would reuse the pages the stopped ones left, growing nothing the guard can see.

What it cannot stop: DuckDB looks for an interrupt only between chunks of rows, so memory that
one chunk's work takes at once (``repeat`` of a value built in a CTE: 100 MB a row, 2,048 rows
a chunk) is gigabytes past the bound before the query can stop. Capping the process's memory
(``RLIMIT_DATA``) made DuckDB fail such an allocation cleanly, but an allocation that failed
in a concurrent commit invalidated the database (DuckDB then refuses every statement until the
process restarts), so there is no such cap here: run the server under a memory limit of its
own (a container's, systemd's ``MemoryMax``), where the kernel ends the process instead.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Protocol

import structlog

from arrowport.memory import release_free_heap

log = structlog.get_logger("arrowport.storage")

# How often resident memory is read while queries run (a read of /proc costs microseconds);
# memory that grows by a GB a second passes the bound by ~20 MB before it is seen.
SAMPLE_SECONDS = 0.02
# The share of the memory the process may use that queries may grow it to, by default.
DEFAULT_SHARE = 0.8
# How long a query that starts while the memory is past the bound waits for it to come back.
ROOM_WAIT_SECONDS = 2.0

_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
# cgroup v2, then v1: the memory the process's container may use.
_CGROUP_LIMITS = (
    Path("/sys/fs/cgroup/memory.max"),
    Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
)


class Stoppable(Protocol):
    """A running query, as the guard sees it."""

    def stop_for_memory(self, resident: int, limit: int) -> None: ...


def resident_bytes() -> int:
    """This process's resident memory."""
    with open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[1]) * _PAGE_BYTES


def usable_bytes() -> int | None:
    """The memory this process may use: the machine's, or less where its cgroup is limited;
    None where the system does not say."""
    machine = os.sysconf("SC_PHYS_PAGES") * _PAGE_BYTES if hasattr(os, "sysconf") else 0
    limits = [machine] if machine > 0 else []
    for path in _CGROUP_LIMITS:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            limits.append(int(text))
    return min(limits) if limits else None


def default_limit(workers: int) -> int | None:
    """``limits.max_server_memory_bytes`` when it is not set: :data:`DEFAULT_SHARE` of the
    memory the process may use, shared among ``workers`` processes."""
    usable = usable_bytes()
    return None if usable is None else int(usable * DEFAULT_SHARE / max(1, workers))


class MemoryGuard:
    """Reads resident memory while queries run; past ``limit`` bytes, stops them."""

    def __init__(self, limit: int, sample_seconds: float = SAMPLE_SECONDS) -> None:
        self.limit = limit
        self._every = sample_seconds
        self._running: set[Stoppable] = set()
        self._stopping: set[Stoppable] = set()  # stopped, and not over yet
        self._changed = threading.Condition()
        self._closed = False
        self._trim_due = False
        self._thread: threading.Thread | None = None

    def watch(self, query: Stoppable) -> None:
        """``query`` starts: it is stopped, with the others, when the memory passes the bound
        (at once, if the memory is past it still after :data:`ROOM_WAIT_SECONDS`)."""
        self._wait_for_room()
        with self._changed:
            if self._closed:
                return
            self._running.add(query)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="arrowport-memory-guard", daemon=True
                )
                self._thread.start()
            self._changed.notify()

    def forget(self, query: Stoppable) -> None:
        """``query`` is over (stopped or not)."""
        with self._changed:
            self._running.discard(query)
            if query in self._stopping:
                self._stopping.discard(query)
                if not self._stopping:
                    # The stopped queries are over: their memory goes back to the system now.
                    self._trim_due = True
                    self._changed.notify()

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._running.clear()
            self._stopping.clear()
            self._changed.notify()

    def _wait_for_room(self) -> None:
        ends = time.monotonic() + ROOM_WAIT_SECONDS
        while resident_bytes() > self.limit and time.monotonic() < ends:
            time.sleep(self._every)

    def _run(self) -> None:
        while True:
            with self._changed:
                while not (self._running or self._trim_due or self._closed):
                    self._changed.wait()
                if self._closed:
                    return
                trim, self._trim_due = self._trim_due, False
                if self._running:
                    resident = resident_bytes()
                    if resident > self.limit:
                        self._stop_all(resident)
            if trim:
                release_free_heap()
            # Outside the lock: queries start and end meanwhile.
            time.sleep(self._every)

    def _stop_all(self, resident: int) -> None:
        log.warning(
            "memory past limits.max_server_memory_bytes: stopping the queries running",
            resident_bytes=resident,
            limit_bytes=self.limit,
            queries=len(self._running),
        )
        for query in self._running:
            query.stop_for_memory(resident, self.limit)
        self._stopping |= self._running
        self._running.clear()
