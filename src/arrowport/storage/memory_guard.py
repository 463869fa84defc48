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

# DuckDB keeps its buffers (up to duckdb.memory_limit) after queries: a default bound is at
# least that much above them.
BUFFER_HEADROOM_BYTES = 512 * 1024**2

_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
_STATM = "/proc/self/statm"
_CGROUPS = Path("/sys/fs/cgroup")


class Stoppable(Protocol):
    """A running query, as the guard sees it."""

    def stop_for_memory(self, resident: int, limit: int) -> None: ...


class ResidentMemory:
    """This process's resident memory, read from one file descriptor kept open (a read
    cannot then fail for want of descriptors)."""

    def __init__(self) -> None:
        self._fd = os.open(_STATM, os.O_RDONLY)  # OSError where there is no /proc

    def __call__(self) -> int:
        if self._fd < 0:
            raise OSError("closed")
        return int(os.pread(self._fd, 256, 0).split()[1]) * _PAGE_BYTES

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)


def usable_bytes() -> int | None:
    """The memory this process may use: the machine's, or less where the cgroup it runs in (or
    one above it) is limited; None where the system does not say."""
    try:
        machine = os.sysconf("SC_PHYS_PAGES") * _PAGE_BYTES
    except (ValueError, OSError):
        machine = 0
    limits = [machine] if machine > 0 else []
    limits += _cgroup_limits()
    return min(limits) if limits else None


def _cgroup_limits() -> list[int]:
    """The memory limits of this process's cgroup and those above it (v2, or v1's memory
    controller), as /proc/self/cgroup names them under /sys/fs/cgroup."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return []
    files: list[Path] = []
    for line in lines:
        fields = line.split(":", 2)
        if len(fields) != 3 or os.path.normpath(fields[2]).startswith(".."):
            continue  # not a line of ours, or a cgroup outside this namespace's view
        _, controllers, path = fields
        if controllers == "":  # v2: one hierarchy
            files += [d / "memory.max" for d in _up(_CGROUPS, path)]
        elif "memory" in controllers.split(","):
            files += [d / "memory.limit_in_bytes" for d in _up(_CGROUPS / "memory", path)]
    limits = []
    for file in files:
        try:
            text = file.read_text().strip()
        except OSError:
            continue
        if text.isdigit():  # "max": no limit
            limits.append(int(text))
    return limits


def _up(root: Path, path: str) -> list[Path]:
    """``root / path`` and each directory above it, up to ``root`` (a container sees its own
    cgroup as the root)."""
    here = root / path.strip("/")
    return [here, *[p for p in here.parents if p == root or root in p.parents]]


def default_limit(workers: int, buffers: int = 0) -> int | None:
    """``limits.max_server_memory_bytes`` when it is not set: :data:`DEFAULT_SHARE` of the
    memory the process may use, shared among ``workers`` processes, and at least
    :data:`BUFFER_HEADROOM_BYTES` above ``buffers`` (DuckDB's ``memory_limit``)."""
    usable = usable_bytes()
    if usable is None:
        return None
    return max(int(usable * DEFAULT_SHARE / max(1, workers)), buffers + BUFFER_HEADROOM_BYTES)


class MemoryGuard:
    """Reads resident memory while queries run; past ``limit`` bytes, stops them. Raises
    OSError where the process cannot read its resident memory (no /proc)."""

    def __init__(self, limit: int, sample_seconds: float = SAMPLE_SECONDS) -> None:
        self.limit = limit
        self._every = sample_seconds
        self._resident = ResidentMemory()
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
            if self._thread is None:
                thread = threading.Thread(
                    target=self._run, name="arrowport-memory-guard", daemon=True
                )
                thread.start()  # may fail (no thread to be had): tried again next time
                self._thread = thread
            self._running.add(query)
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
            if self._closed:
                return
            self._closed = True
            self._running.clear()
            self._stopping.clear()
            self._changed.notify()
            self._resident.close()

    def _wait_for_room(self) -> None:
        if self._read() <= self.limit:
            return
        release_free_heap()  # what earlier work left free in the heap, first
        ends = time.monotonic() + ROOM_WAIT_SECONDS
        while self._read() > self.limit and time.monotonic() < ends:
            time.sleep(self._every)

    def _read(self) -> int:
        """Resident memory, or 0 (under any bound) if it cannot be read (the guard is closed):
        a guard that cannot see must not stop queries."""
        try:
            return self._resident()
        except (OSError, ValueError, IndexError):
            return 0

    def _run(self) -> None:
        while True:
            try:
                if not self._step():
                    return
            except Exception as exc:  # the guard must go on guarding
                log.error("the memory guard failed a step", reason=repr(exc))
            time.sleep(self._every)  # outside the lock: queries start and end meanwhile

    def _step(self) -> bool:
        """One look at the memory; False once the guard is closed."""
        stopped: list[Stoppable] = []
        with self._changed:
            while not (self._running or self._trim_due or self._closed):
                self._changed.wait()
            if self._closed:
                return False
            trim, self._trim_due = self._trim_due, False
            resident = self._read() if self._running else 0
            if resident > self.limit:
                # Under the lock: a query that ends meanwhile (forget) is not stopped after it
                # has ended, when its cursor may run another query (a transaction's).
                stopped = list(self._running)
                self._stopping |= self._running
                self._running.clear()
                for query in stopped:
                    try:
                        query.stop_for_memory(resident, self.limit)
                    except Exception as exc:  # the others are stopped all the same
                        log.error("a query could not be stopped", reason=repr(exc))
        if trim:
            release_free_heap()
        if stopped:
            log.warning(
                "memory past limits.max_server_memory_bytes: stopped the queries running",
                resident_bytes=resident,
                limit_bytes=self.limit,
                queries=len(stopped),
            )
        return True
