"""Stopping a running query: at its time limit, when its caller goes away, when the server's
memory passes its bound, or when its storage closes.

DuckDB stops a query only when its cursor is interrupted, and only a statement that runs, so
both ways interrupt the cursor from a timer thread, again and again until the query has ended.
"""

from __future__ import annotations

import threading
import time

import duckdb

from arrowport.errors import ArrowportError, OutOfMemory, QueryTimeout, ShuttingDown
from arrowport.storage.memory_guard import MemoryGuard


class QueryDeadline:
    """Interrupts a query's cursor when its time is up (``limits.query_timeout_seconds``),
    when ``memory`` finds the server's memory past its bound while the query runs, or when
    ``running``'s storage closes."""

    def __init__(
        self,
        cursor: duckdb.DuckDBPyConnection,
        seconds: float | None,
        memory: MemoryGuard | None = None,
        running: RunningQueries | None = None,
    ) -> None:
        self._cursor = cursor
        self._seconds = seconds
        self._memory = memory
        self._running = running
        self._interrupter: _Interrupter | None = None
        # Why the query was stopped before its time, and what interrupts it (the first stop).
        self._stopped: ArrowportError | None = None
        self._stopper: _Interrupter | None = None
        self._stop_lock = threading.Lock()
        if memory is not None:
            memory.watch(self)  # first: it may wait, or fail, and then no timer is left behind
        # When the time is up, on time.monotonic()'s clock (None: never).
        self.ends_at = None if seconds is None else time.monotonic() + seconds
        if seconds is not None:
            self._interrupter = _Interrupter(cursor, after=seconds)
        if running is not None:
            running.add(self)

    @property
    def expired(self) -> bool:
        return self._interrupter is not None and self._interrupter.fired

    def stop_for_memory(self, resident: int, limit: int) -> None:
        """Stop the query: the server's memory is past its bound (called by the guard)."""
        self._stop(
            OutOfMemory(
                f"the server's memory ({resident // 1024**2} MiB) passed "
                f"limits.max_server_memory_bytes ({limit // 1024**2} MiB) while this query ran, "
                "and it was stopped: ask for less at once (fewer rows, shorter values), or retry "
                "when the server has less to do",
                resident_bytes=resident,
                limit_bytes=limit,
            )
        )

    def stop_for_shutdown(self) -> None:
        """Stop the query: the server is closing its database (called by
        :class:`RunningQueries`)."""
        self._stop(ShuttingDown("the server is shutting down and stopped the query; retry it"))

    def _stop(self, why: ArrowportError) -> None:
        with self._stop_lock:
            if self._stopped is None:
                self._stopped = why
                self._stopper = _Interrupter(self._cursor)

    def check(self) -> None:
        """Raise 503 if the query was stopped for memory or a shutdown, 408 if its time ran
        out."""
        if self._stopped is not None:
            raise self._stopped
        if self.expired:
            raise QueryTimeout(
                f"the query ran longer than {self._seconds:g} seconds and was stopped "
                "(limits.query_timeout_seconds)"
            )

    def overdue(self) -> QueryTimeout:
        """The error of a query whose time ran out while its answer waited for its client."""
        return QueryTimeout(
            f"the query's answer was not taken within {self._seconds:g} seconds and the query "
            "was stopped (limits.query_timeout_seconds)"
        )

    def cancel(self) -> None:
        if self._running is not None:
            self._running.discard(self)  # first, as for the guard
        if self._memory is not None:
            self._memory.forget(self)  # first: the guard cannot start an interrupter after this
        for interrupter in (self._interrupter, self._stopper):
            if interrupter is not None:
                interrupter.stop()


class RunningQueries:
    """The queries running on a storage. Its close stops those still running (past the
    shutdown's deadline, their requests were cancelled) instead of waiting for each to end on
    its own, up to limits.query_timeout_seconds later."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queries: set[QueryDeadline] = set()
        self._stopped = False

    def add(self, query: QueryDeadline) -> None:
        with self._lock:
            self._queries.add(query)
            if self._stopped:
                query.stop_for_shutdown()

    def discard(self, query: QueryDeadline) -> None:
        with self._lock:
            self._queries.discard(query)

    def stop_all(self) -> None:
        with self._lock:
            self._stopped = True
            for query in self._queries:
                query.stop_for_shutdown()


class QueryStop:
    """Stops a query from another thread (its client went away): at once if it has not started
    yet, by interrupting DuckDB if it runs."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cursor: duckdb.DuckDBPyConnection | None = None
        self._interrupter: _Interrupter | None = None
        self._deadline: QueryDeadline | None = None
        self.requested = False

    def watch(
        self, cursor: duckdb.DuckDBPyConnection, deadline: QueryDeadline | None = None
    ) -> None:
        with self._lock:
            self._cursor = cursor
            self._deadline = deadline
            if self.requested and self._interrupter is None:
                self._interrupter = _Interrupter(cursor)

    def forget(self) -> None:
        with self._lock:
            self._cursor = None
            self._deadline = None
            if self._interrupter is not None:
                self._interrupter.stop()
                self._interrupter = None

    def __call__(self) -> None:
        with self._lock:
            self.requested = True
            if self._cursor is not None and self._interrupter is None:
                self._interrupter = _Interrupter(self._cursor)

    def time_left(self) -> float | None:
        """Seconds until the watched query's time is up (an answer still being sent counts);
        None when no query is watched or it has no time limit."""
        deadline = self._deadline
        if deadline is None or deadline.ends_at is None:
            return None
        return deadline.ends_at - time.monotonic()

    def overdue(self) -> QueryTimeout:
        """The error to end the call with once :meth:`time_left` has run out."""
        deadline = self._deadline
        if deadline is None:
            return QueryTimeout("the query's time ran out (limits.query_timeout_seconds)")
        return deadline.overdue()


# DuckDB interrupts only a statement that runs: an interrupt that lands between two of a query's
# statements (while the read guard checks it, say) is lost, and the query would then run on. So a
# query to be stopped is interrupted again at this interval until it has ended.
INTERRUPT_EVERY_SECONDS = 0.2


class _Interrupter:
    """Interrupts ``cursor`` ``after`` seconds (at once: 0), and again every
    :data:`INTERRUPT_EVERY_SECONDS` until :meth:`stop` (the query has ended) or until the cursor
    is closed. ``fired``: it has interrupted at least once."""

    def __init__(self, cursor: duckdb.DuckDBPyConnection, after: float = 0.0) -> None:
        self._cursor = cursor
        self._lock = threading.Lock()
        self._stopped = False
        self._timer: threading.Timer | None = None
        self.fired = False
        if after > 0:
            with self._lock:
                self._schedule(after)
        else:
            self._fire()

    def _schedule(self, seconds: float) -> None:
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self.fired = True
            try:
                self._cursor.interrupt()
            except duckdb.Error:  # closed: its query is over
                return
            self._schedule(INTERRUPT_EVERY_SECONDS)

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            if self._timer is not None:
                self._timer.cancel()
