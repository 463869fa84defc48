"""Query answers between ``GetFlightInfo`` (which runs the query, so its schema is DuckDB's own
and its errors come back at once) and ``DoGet`` (which streams it, once, with exactly that
schema).

* A query on its own stays a running query (it holds its turn among the admitted queries) and is
  streamed as DuckDB produces it, like Arrowport's own Flight ``DoGet``.
* A query in a transaction shares the transaction's one DuckDB cursor, so it is read whole at
  once into a spool (memory, then a temporary file), counted against ``limits.max_result_bytes``.

An answer not fetched within :data:`ANSWER_IDLE_SECONDS` is dropped (its query closed); a
running query's answer sooner, after :data:`ANSWER_TURN_SECONDS`, when another query waits for a
turn (a client that asked and went away holds no turn for long; ADBC fetches within
milliseconds).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from typing import IO, Protocol

import pyarrow as pa

from arrowport.flight.sql.handles import Registry
from arrowport.reads import ResultBudget, limited
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
            yield from limited(iter(self._result), budget)

    def close(self) -> None:
        self._result.close()


class Spooled:
    """A query's whole answer, read into a spool while the query ran."""

    holds_turn = False

    def __init__(self, rows: Rows, budget: ResultBudget, directory: str | None) -> None:
        self.schema = rows.schema
        self.rows = 0
        self._spool: IO[bytes] = tempfile.SpooledTemporaryFile(  # noqa: SIM115 (closed by close)
            max_size=SPOOL_MEMORY_BYTES, dir=directory
        )
        try:
            with pa.ipc.new_stream(pa.PythonFile(self._spool, mode="w"), rows.schema) as writer:
                for batch in limited(rows.batches, budget):
                    writer.write_batch(batch)
                    self.rows += batch.num_rows
            self._spool.seek(0)
        except BaseException:
            self._spool.close()
            raise

    def batches(self, budget: ResultBudget) -> Iterator[pa.RecordBatch]:
        try:
            yield from pa.ipc.open_stream(pa.PythonFile(self._spool, mode="r"))
        finally:
            self.close()

    def close(self) -> None:
        self._spool.close()


def answers() -> Registry[Answer]:
    return Registry(
        "query result",
        "answer",
        ANSWER_CAPACITY,
        ANSWER_IDLE_SECONDS,
        close=lambda a: a.close(),
        sooner=f" (a running query's after {ANSWER_TURN_SECONDS:g} s, while other queries "
        "waited for its turn)",
    )


def drop_waiting(registry: Registry[Answer]) -> int:
    """Drop the running queries' answers left unfetched for :data:`ANSWER_TURN_SECONDS`,
    giving their turns back; how many."""
    return registry.drop_idle(ANSWER_TURN_SECONDS, lambda answer: answer.holds_turn)
