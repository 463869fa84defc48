"""A ``READ ONLY`` transaction held open across calls: every query run in it sees one committed
state of the database (Flight SQL's transactions, which clients keep between calls).

A snapshot runs one query at a time (others wait for it), each checked by the same read guard,
with the same time limit and the same errors as any query (:mod:`arrowport.storage.query`). A
query that fails while it runs leaves DuckDB's transaction aborted, as SQL databases do: from
then on the snapshot refuses queries (409 ``transaction_aborted``) until it is ended.

Example::

    snapshot = Snapshot(db)
    with snapshot.query("SELECT count(*) FROM events", None) as rows:
        table = pa.Table.from_batches(rows.batches, schema=rows.schema)
    snapshot.close()
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import duckdb
import pyarrow as pa

from arrowport.errors import (
    ArrowportError,
    ReadOnly,
    StorageError,
    TransactionAborted,
)
from arrowport.storage.metadata import QueryShape, describe_query_in
from arrowport.storage.query import (
    Parameters,
    _check,
    _failed,
    _outside,
    close_cursor,
    deadline_of,
    schema_in,
)
from arrowport.storage.query_stop import QueryDeadline, QueryStop
from arrowport.storage.result_batches import batch_rows, streaming
from arrowport.storage.result_types import column_mends, mended_batch, mended_schema

if TYPE_CHECKING:
    from arrowport.storage.engine import Engine as Database

_T = TypeVar("_T")


@dataclass
class Rows:
    """A running query's schema and its batches (read them before the block ends)."""

    schema: pa.Schema
    batches: Iterator[pa.RecordBatch]


class Snapshot:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._lock = threading.Lock()
        self._closed = False
        self.aborted: str | None = None
        self._cursor = db.connect()
        try:
            streaming(self._cursor)
            self._cursor.execute("BEGIN TRANSACTION READ ONLY")
        except duckdb.Error as exc:
            self._cursor.close()
            raise StorageError(f"cannot start a transaction: {db.scrub(str(exc))}") from None

    @property
    def busy(self) -> bool:
        return self._lock.locked()

    def describe(self, sql: str) -> QueryShape:
        """What ``sql`` takes and returns, planned in this snapshot (a table replaced since it
        was taken is described as the snapshot's queries read it)."""
        return self._planned(lambda: describe_query_in(self._db, self._cursor, sql))

    def schema(
        self, sql: str, params: Parameters, stop: QueryStop | None = None
    ) -> pa.Schema | None:
        """``sql``'s result schema, planned in this snapshot (see :func:`schema_in`)."""
        return self._planned(lambda: schema_in(self._db, self._cursor, sql, params, stop))

    def _planned(self, plan: Callable[[], _T]) -> _T:
        with self._lock:
            self._check_usable()
            try:
                with self._db.catalog_turn():
                    return plan()
            except BaseException:
                # Planning folds constants: one that fails ('a'::INT) aborts the transaction.
                if self._is_aborted():
                    self.aborted = "a query in it failed"
                raise

    def _check_usable(self) -> None:
        if self._closed:
            raise TransactionAborted("the transaction has ended")
        if self.aborted is not None:
            raise TransactionAborted(
                f"the transaction was aborted ({self.aborted}): roll it back (or commit) "
                "to start a new one"
            )

    @contextlib.contextmanager
    def query(self, sql: str, params: Parameters, stop: QueryStop | None = None) -> Iterator[Rows]:
        """Run ``sql`` in this snapshot; the block reads its rows (other queries wait).
        ``stop`` ends it from another thread."""
        with self._lock:
            self._check_usable()
            deadline = deadline_of(self._db, self._cursor)
            if stop is not None:
                stop.watch(self._cursor, deadline)
            try:
                try:
                    with self._db.catalog_turn():  # may be the transaction's first read of it
                        widest = _check(self._db, self._cursor, sql, params)
                    self._cursor.execute(sql, params if params else None)
                    description = self._cursor.description
                    reader = self._cursor.to_arrow_reader(batch_rows(description, widest))
                except BaseException as exc:
                    raise self._failure(exc, deadline, stop) from None
                mends = column_mends(description)
                schema = mended_schema(reader.schema, mends)
                batches = (mended_batch(b, mends) for b in self._batches(reader, deadline, stop))
                try:
                    yield Rows(schema, batches)
                finally:
                    # Rows left unread (a caller wanting only the schema) end with the block,
                    # not at the transaction's next query.
                    reader.close()
            finally:
                deadline.cancel()
                if stop is not None:
                    stop.forget()

    def _batches(
        self, reader: pa.RecordBatchReader, deadline: QueryDeadline, stop: QueryStop | None
    ) -> Iterator[pa.RecordBatch]:
        try:
            yield from reader
        except (duckdb.Error, pa.ArrowException, OSError) as exc:
            raise self._failure(exc, deadline, stop) from None

    def _failure(
        self, exc: BaseException, deadline: QueryDeadline, stop: QueryStop | None
    ) -> BaseException:
        """The client's error for ``exc``; notes whether it left the transaction aborted."""
        deadline.cancel()  # the query is over: nothing may interrupt the probe below
        if stop is not None:
            stop.forget()
        if isinstance(exc, UnicodeDecodeError):
            return _failed(exc, self._db)
        if not isinstance(exc, duckdb.Error | pa.ArrowException | OSError):
            return exc
        if self._is_aborted():
            self.aborted = "a query in it failed"
        try:
            deadline.check()
        except ArrowportError as stopped:
            self.aborted = f"a query in it was stopped: {stopped.code}"
            return stopped
        text = self._db.scrub(str(exc))
        if isinstance(exc, duckdb.PermissionException):
            return _outside(exc, self._db)
        if "Permission Error" in text:
            return ReadOnly(f"the query tried to reach outside the database: {text}")
        return _failed(exc, self._db)

    def _is_aborted(self) -> bool:
        try:
            self._cursor.execute("SELECT 1").fetchall()
        except duckdb.Error:
            return True
        return False

    def close(self) -> None:
        """End the transaction (nothing to keep: it only read); waits for a running query."""
        self.interrupt()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            with contextlib.suppress(duckdb.Error):
                close_cursor(self._cursor)

    def interrupt(self) -> None:
        """Stop a running query at once (a snapshot being closed from another thread)."""
        if self.busy:
            with contextlib.suppress(duckdb.Error):
                self._cursor.interrupt()
