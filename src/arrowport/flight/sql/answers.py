"""Query answers between ``GetFlightInfo`` (which runs the query, so its schema is DuckDB's own
and its errors come back at once) and ``DoGet`` (which streams it, once, with exactly that
schema).

* A query on its own stays a running query (it holds its turn among the admitted queries) and is
  streamed as DuckDB produces it, like Arrowport's own Flight ``DoGet``.
* A query in a transaction shares the transaction's one DuckDB cursor, so it is read whole at
  once into a spool (memory, then a temporary file), counted against ``limits.max_result_bytes``
  and, with every other spooled answer, against ``flight.max_spooled_answer_bytes``
  (:class:`SpoolRoom`): a query whose answer would pass that is refused (RESOURCE_EXHAUSTED
  ``result_too_large``), so answers nobody fetches cannot fill the disk. An answer's spool is
  deleted, and its bytes given back, when it is fetched, dropped, or refused.

An answer not fetched within :data:`ANSWER_IDLE_SECONDS` is dropped (its query closed); a
running query's answer sooner, after :data:`ANSWER_TURN_SECONDS`, when another query waits for a
turn (a client that asked and went away holds no turn for long; ADBC fetches within
milliseconds).
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Iterator
from typing import IO, Protocol

import pyarrow as pa

from arrowport.errors import ResultTooLarge
from arrowport.flight.sql.handles import Registry
from arrowport.reads import ResultBudget, answer_batches
from arrowport.storage.query import QueryResult
from arrowport.storage.snapshot import Rows

ANSWER_CAPACITY = 256
ANSWER_IDLE_SECONDS = 60.0
ANSWER_TURN_SECONDS = 5.0
SPOOL_MEMORY_BYTES = 1024**2


class Answer(Protocol):
    schema: pa.Schema
    rows: int  # -1: not known before it is read
    holds_turn: bool  # a running query: it holds one of the admitted queries' turns

    def batches(self, budget: ResultBudget) -> Iterator[pa.RecordBatch]: ...

    def close(self) -> None: ...


class Streaming:
    """A running query, streamed when fetched."""

    rows = -1
    holds_turn = True

    def __init__(self, result: QueryResult) -> None:
        self._result = result
        self.schema = result.schema

    def batches(self, budget: ResultBudget) -> Iterator[pa.RecordBatch]:
        with self._result:
            yield from answer_batches(iter(self._result), budget)

    def close(self) -> None:
        self._result.close()


class SpoolRoom:
    """The bytes every spooled answer holds (memory and temporary files), of at most ``limit``
    (``flight.max_spooled_answer_bytes``)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._lock = threading.Lock()

    def take(self, size: int) -> None:
        """Hold ``size`` more bytes (413 ``result_too_large`` if they do not fit)."""
        with self._lock:
            if self.used + size > self.limit:
                raise ResultTooLarge(
                    f"the answers waiting to be fetched would take more than {self.limit} bytes "
                    "(flight.max_spooled_answer_bytes): fetch those waiting, select fewer rows "
                    f"or columns, or retry shortly (unfetched ones are dropped after "
                    f"{ANSWER_IDLE_SECONDS:g} s)",
                    limit=self.limit,
                )
            self.used += size

    def adjust(self, size: int) -> None:
        """Count ``size`` more (or, negative, fewer) bytes, whether they fit or not: what was
        written beyond what was taken (an IPC message's header and padding)."""
        with self._lock:
            self.used += size


class Spooled:
    """A query's whole answer, read into a spool while the query ran."""

    holds_turn = False

    def __init__(
        self, rows: Rows, budget: ResultBudget, room: SpoolRoom, directory: str | None
    ) -> None:
        self.schema = rows.schema
        self.rows = 0
        self._room = room
        self._held = 0  # bytes of the room this answer holds
        self._spool: IO[bytes] = tempfile.SpooledTemporaryFile(  # noqa: SIM115 (closed by close)
            max_size=SPOOL_MEMORY_BYTES, dir=directory
        )
        try:
            with pa.ipc.new_stream(pa.PythonFile(self._spool, mode="w"), rows.schema) as writer:
                for batch in answer_batches(rows.batches, budget):
                    size = batch.get_total_buffer_size()
                    self._room.take(size)
                    self._held += size
                    writer.write_batch(batch)
                    self.rows += batch.num_rows
                    self._settle()
            self._settle()
            self._spool.seek(0)
        except BaseException:
            self.close()
            raise

    def _settle(self) -> None:
        """Hold exactly what the spool holds."""
        written = self._spool.tell()
        self._room.adjust(written - self._held)
        self._held = written

    def batches(self, budget: ResultBudget) -> Iterator[pa.RecordBatch]:
        try:
            yield from pa.ipc.open_stream(pa.PythonFile(self._spool, mode="r"))
        finally:
            self.close()

    def close(self) -> None:
        """Delete the spool and give its bytes back (again: nothing to do)."""
        self._spool.close()
        held, self._held = self._held, 0
        self._room.adjust(-held)


class Answers:
    """The answers waiting for their ``DoGet``, and the room their spools take."""

    def __init__(self, max_spooled_bytes: int, directory: str | None) -> None:
        self.held: Registry[Answer] = Registry(
            "query result",
            "answer",
            ANSWER_CAPACITY,
            ANSWER_IDLE_SECONDS,
            close=lambda a: a.close(),
            sooner=f" (a running query's after {ANSWER_TURN_SECONDS:g} s, while other queries "
            "waited for its turn)",
        )
        self.room = SpoolRoom(max_spooled_bytes)
        self._directory = directory

    def spooled(self, rows: Rows, budget: ResultBudget) -> Spooled:
        """``rows`` read whole into a spool, held to the room left."""
        return Spooled(rows, budget, self.room, self._directory)

    def add(self, owner: str, answer: Answer) -> bytes:
        """Hold ``answer`` for its ``DoGet``; its handle (refused, and closed, when full)."""
        return self.held.add(owner, answer)

    def take(self, handle: bytes, owner: str) -> Answer:
        """The answer behind ``handle``, no longer held (404 ``unknown_handle``); the caller
        closes it."""
        answer = self.held.pop(handle, owner)
        if answer is None:
            raise self.held.unknown(handle)
        return answer

    def drop_waiting(self) -> int:
        """Drop one running query's answer left unfetched for :data:`ANSWER_TURN_SECONDS` (the
        least recently used), giving its turn back to a query that waits for one (each waiting
        query asks again while it waits); how many (0 or 1)."""
        return self.held.drop_idle(ANSWER_TURN_SECONDS, lambda answer: answer.holds_turn, most=1)

    def sweep(self) -> None:
        self.held.sweep()

    def close(self) -> None:
        self.held.close()
