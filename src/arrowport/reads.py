"""The read path every protocol shares: listings, table reads and read-only queries, admitted.

At most ``limits.max_concurrent_queries`` queries run at once and ``limits.max_queued_queries``
wait for a turn (more get 503), so long queries cannot take every thread and every core; listings
and descriptions skip the queue (they are quick), which keeps ``/tables`` and Flight's metadata
calls fast while long queries run. A query holds its turn until its answer has been read to the
end (or abandoned); what the answer may amount to is counted by whoever renders it, against
``limits.max_result_bytes`` (see :class:`ResultBudget`).

Example::

    with reads.query("SELECT * FROM t WHERE id > ?", [10]) as result:
        for batch in result: ...
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import pyarrow as pa
import structlog

from arrowport.config import CompressionSettings, Settings
from arrowport.errors import Overloaded, ResultTooLarge
from arrowport.storage.coalesce import ROW_GROUP_ROWS, coalesce
from arrowport.storage.interface import Storage
from arrowport.storage.query import Parameters, QueryResult, TableInfo
from arrowport.storage.query_stop import QueryStop
from arrowport.storage.schema import child_arrays, has_dictionary

log = structlog.get_logger(__name__)

T = TypeVar("T")

# A Flight answer's messages join DuckDB's batches up to this size (see answer_batches): as
# large as the Flight adapter sends one (flight.frames.MAX_SEND_BYTES).
ANSWER_MESSAGE_BYTES = 8 * 1024**2


class ResultBudget:
    """Counts the bytes of one answer as it is rendered; 413 ``result_too_large`` past the
    limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def add(self, size: int) -> None:
        self.used += size
        self.check(0)

    def check(self, size: int) -> None:
        """413 if ``size`` more bytes would not fit (counts nothing)."""
        if self.used + size > self.limit:
            raise ResultTooLarge(
                f"the answer is larger than {self.limit} bytes (limits.max_result_bytes): "
                "select fewer rows or columns, or use LIMIT",
                limit=self.limit,
            )


# How often a query waiting for a turn asks for turns held by unfetched answers.
_RECLAIM_EVERY_SECONDS = 0.5


class _Turns:
    """Queries admitted (running or waiting) and the turns to run; both are given back when the
    query's result is closed."""

    def __init__(self, running: int, waiting: int) -> None:
        self._slots = threading.BoundedSemaphore(running)
        self.capacity = running + waiting
        self._lock = threading.Lock()
        self._admitted = 0
        self._waiting = 0
        # Asked, while a query waits, to give back turns held by answers nobody is fetching.
        self.reclaim: Callable[[], object] | None = None

    def _refusal(self) -> Overloaded:
        return Overloaded("too many queries are running or waiting; retry shortly")

    def check(self) -> None:
        """503 now if no query could be admitted (a quick refusal before any thread is used)."""
        if self._admitted >= self.capacity:
            raise self._refusal()

    def enter(self) -> None:
        """Count a query in (503 when as many run and wait as may), then wait for a turn."""
        with self._lock:
            if self._admitted >= self.capacity:
                raise self._refusal()
            self._admitted += 1
            self._waiting += 1
        try:
            self._wait_for_turn()
        finally:
            with self._lock:
                self._waiting -= 1

    def _wait_for_turn(self) -> None:
        if self.reclaim is None:
            self._slots.acquire()
            return
        while not self._slots.acquire(timeout=_RECLAIM_EVERY_SECONDS):
            try:
                self.reclaim()
            except Exception:  # this query still waits for its turn: it is not its failure
                log.exception("giving back turns of unfetched answers failed")

    @property
    def waiting(self) -> int:
        """Queries admitted and waiting for a turn."""
        return self._waiting

    @property
    def running(self) -> int:
        """Queries holding a turn (running, or their answers not yet read to the end)."""
        return self._admitted - self._waiting

    def leave(self) -> None:
        self._slots.release()
        with self._lock:
            self._admitted -= 1


class ReadService:
    def __init__(self, settings: Settings, db: Storage) -> None:
        self.settings = settings
        self.db = db
        limits = settings.limits
        self._turns = _Turns(limits.max_concurrent_queries, limits.max_queued_queries)
        # One thread per admitted query: waiting ones block here, not in the event loop's pool.
        self._pool = ThreadPoolExecutor(self._turns.capacity, "arrowport-query")

    def budget(self) -> ResultBudget:
        return ResultBudget(self.settings.limits.max_result_bytes)

    @property
    def queries_running(self) -> int:
        """Queries holding one of ``limits.max_concurrent_queries`` turns."""
        return self._turns.running

    @property
    def queries_waiting(self) -> int:
        """Queries waiting for a turn, of at most ``limits.max_queued_queries``."""
        return self._turns.waiting

    def reclaim_turns_with(self, reclaim: Callable[[], object]) -> None:
        """While a query waits for a turn, call ``reclaim`` now and then: it closes results
        held for clients that have not come for them (giving their turns back)."""
        self._turns.reclaim = reclaim

    async def run(self, work: Callable[[], T]) -> T:
        """Run ``work`` (which starts a query) on the query threads; 503 at once when as many
        queries run and wait as may."""
        self._turns.check()
        return await asyncio.get_running_loop().run_in_executor(self._pool, work)

    # -- queries (admitted) --------------------------------------------------------------------

    def query(
        self, sql: str, params: Parameters = None, stop: QueryStop | None = None
    ) -> QueryResult:
        """Start a read-only query (blocks while it waits for a turn); iterate or close it.
        ``stop`` ends it from another thread (its client went away)."""
        return self._admitted(lambda: self.db.query(sql, params, stop))

    def read_table(self, name: str) -> QueryResult:
        return self._admitted(lambda: self.db.read_table(name))

    def _admitted(self, start: Callable[[], QueryResult]) -> QueryResult:
        self._turns.enter()
        try:
            result = start()
        except BaseException:
            self._turns.leave()
            raise
        result.on_close(self._turns.leave)
        return result

    def with_turn(self, work: Callable[[], T]) -> T:
        """Run ``work`` (a query read whole where it runs, e.g. in a held transaction) as an
        admitted query: it waits for a turn, or 503 when as many run and wait as may."""
        self._turns.enter()
        try:
            return work()
        finally:
            self._turns.leave()

    # -- metadata (not queued) -----------------------------------------------------------------

    def tables(self) -> list[TableInfo]:
        return self.db.tables()

    def table(self, name: str) -> TableInfo:
        return self.db.table(name)

    def table_schemas(self) -> list[tuple[TableInfo, pa.Schema]]:
        return self.db.table_schemas()

    def query_schema(
        self, sql: str, params: Parameters = None, stop: QueryStop | None = None
    ) -> pa.Schema:
        """The schema of ``sql``'s result, planned, not run (planning, which can take long,
        takes a turn too); a query that cannot be described that way is run as an admitted
        query, then closed. ``stop`` ends either from another thread."""
        schema = self.with_turn(lambda: self.db.query_schema(sql, params, stop))
        if schema is not None:
            return schema
        result = self.query(sql, params, stop)
        result.close()
        return result.schema

    def table_schema(self, name: str) -> pa.Schema:
        return self.db.table_schema(name)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def answer_batches(
    batches: Iterator[pa.RecordBatch], budget: ResultBudget
) -> Iterator[pa.RecordBatch]:
    """A Flight answer's batches: ``batches`` counted against ``budget`` as they pass (see
    :func:`limited`), then joined into messages of up to a row group or
    :data:`ANSWER_MESSAGE_BYTES`. DuckDB gives a result's rows in small batches where they hold
    text (8,192 rows), and a gRPC client takes the messages its receive window holds (about
    4 MB) before its application reads one: of small messages it holds many, which a slow
    reader then takes for longer than ``limits.body_timeout_seconds`` before gRPC lets the
    server send more (a reader pausing 0.5 s per 0.9 MB message was cut off)."""
    return coalesce(limited(batches, budget), ROW_GROUP_ROWS, ANSWER_MESSAGE_BYTES)


def limited(batches: Iterator[pa.RecordBatch], budget: ResultBudget) -> Iterator[pa.RecordBatch]:
    """``batches``, counted against ``budget`` by their Arrow size as they pass. A dictionary
    counts when it differs from the last batch's at its place, as an IPC stream sends it:
    DuckDB gives an ENUM's whole dictionary with every batch."""
    sent: dict[tuple[int, ...], pa.Array] = {}
    for batch in batches:
        budget.add(_new_bytes(batch, sent))
        yield batch


def _new_bytes(batch: pa.RecordBatch, sent: dict[tuple[int, ...], pa.Array]) -> int:
    """``batch``'s Arrow size, less the dictionaries ``sent`` already (by their place)."""
    size = int(batch.get_total_buffer_size())
    for index, column in enumerate(batch.columns):
        if not has_dictionary(column.type):
            continue
        for place, dictionary in _dictionaries(column, (index,)):
            last = sent.get(place)
            if last is not None and last.equals(dictionary):
                size -= int(dictionary.get_total_buffer_size())
            sent[place] = dictionary
    return max(0, size)


def _dictionaries(
    array: pa.Array, place: tuple[int, ...]
) -> Iterator[tuple[tuple[int, ...], pa.Array]]:
    """The dictionaries in ``array`` at any depth, each with its place (child indexes)."""
    if isinstance(array, pa.DictionaryArray):
        yield place, array.dictionary
        return
    for index, child in enumerate(child_arrays(array)):
        if has_dictionary(child.type):
            yield from _dictionaries(child, (*place, index))


def result_write_options(settings: CompressionSettings) -> pa.ipc.IpcWriteOptions:
    """IPC buffer compression of query answers: ``compression.algorithm`` at its ``level``."""
    if settings.algorithm == "none":
        return pa.ipc.IpcWriteOptions()
    level = settings.level if settings.algorithm == "zstd" else None
    return pa.ipc.IpcWriteOptions(compression=pa.Codec(settings.algorithm, level))
