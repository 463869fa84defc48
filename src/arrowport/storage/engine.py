"""What every storage target shares: one DuckDB connection, its transactions, and the write of
Arrow data with its delivery records.

Writers run on worker threads, each on its own cursor; DDL on a table, and writes of the same
idempotency key or producer, are serialised by :mod:`arrowport.storage.write_locks`.

A target (the DuckDB file, a DuckLake) opens the connection and says what is particular to it:
how a cursor reaches its tables, how delivery state is kept, whether the table catalog may be
cached, and what closing it involves.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence

import duckdb
import pyarrow as pa

from arrowport.errors import ArrowportError, StorageError, TruncatedStream
from arrowport.storage.catalog import TableCatalog, TransactionCatalog
from arrowport.storage.delivery import DeliveryLedger, Duplicate
from arrowport.storage.identifiers import check_table_name
from arrowport.storage.memory_guard import MemoryGuard
from arrowport.storage.query import (
    Parameters,
    QueryResult,
    TableInfo,
    describe_table,
    list_table_schemas,
    list_tables,
    query_schema,
    read_table,
    run_query,
    table_schema,
)
from arrowport.storage.query_stop import QueryStop, RunningQueries
from arrowport.storage.schema import Column
from arrowport.storage.sql_guard import ReadGuard
from arrowport.storage.table_writer import reshapes, write_table
from arrowport.storage.write_locks import (
    WriteLocks,
    abandoned,
    delivery_lock_name,
    table_lock_name,
)
from arrowport.storage.writes import (
    WriteJob,
    WriteOutcome,
    concat,
    io_error,
    merge_appends,
    translate_error,
)

# The units DuckDB shows a size in ("183.1 MiB").
_SIZE_UNITS = {
    "bytes": 1,
    "KiB": 1024,
    "MiB": 1024**2,
    "GiB": 1024**3,
    "TiB": 1024**4,
    "PiB": 1024**5,
    "EiB": 1024**6,
}

# DuckDB's I/O errors, as DuckDB raises them, or as its Arrow reader passes them on mid-stream.
_IO_ERROR_PREFIXES = ("IO Error:", "HTTP Error:")


def is_io_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is DuckDB failing to read or write a file (or a lake's object store)."""
    if isinstance(exc, duckdb.IOException):
        return True
    return isinstance(exc, pa.ArrowException | OSError) and str(exc).startswith(_IO_ERROR_PREFIXES)


# What DuckDB appends to an INTERNAL error's message.
_STACK_TRACE = "\n\nStack Trace:"


class Engine:
    """A storage target over one DuckDB connection. Thread-safe: every caller gets its own
    cursor. Subclasses open the connection and set :attr:`guard` before serving."""

    target = "duckdb"

    def __init__(self, root: duckdb.DuckDBPyConnection, query_timeout: float | None) -> None:
        self._root = root
        self.query_timeout = query_timeout
        # Stops the queries running when the server's memory passes its bound (None: never).
        self.memory_guard: MemoryGuard | None = None
        self.running_queries = RunningQueries()
        self.guard = ReadGuard(False)
        self._paths: list[tuple[str, str]] = []
        self._locks = WriteLocks()
        self._closed = False
        self._closers: list[Callable[[], object]] = []
        self.catalog = TableCatalog()

    # -- connections ---------------------------------------------------------------------------

    def connect(self) -> duckdb.DuckDBPyConnection:
        """A new connection to the database; the caller closes it."""
        if self._closed:
            raise StorageError("the database is closed")
        return self._root.cursor()

    @contextlib.contextmanager
    def cursor(self, long: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection of its own for the calling thread, closed on exit: for a short piece of
        work, or a ``long`` one (maintenance), as it holds a :meth:`catalog_turn` throughout."""
        with self.catalog_turn(long):
            cur = self.connect()
            try:
                yield cur
            finally:
                cur.close()

    def catalog_turn(self, long: bool = False) -> contextlib.AbstractContextManager[None]:
        """Held by a statement that may be the first of its transaction to read the catalog
        (see :mod:`arrowport.storage.lake_turns`; ``long``: by a piece of work of unknown
        length): nothing to wait for here."""
        return contextlib.nullcontext()

    def hide_paths(self, *paths: tuple[str, str]) -> None:
        """Paths (with their stand-ins) that error messages must not show."""
        home = os.path.expanduser("~")
        known = [
            *paths,
            (os.path.realpath(home), "~"),
            (home, "~"),
            (os.path.realpath(tempfile.gettempdir()), "<temp>"),
        ]
        # Longest first, so that a path is never half replaced by a shorter one it contains.
        self._paths = sorted(
            [(p, label) for p, label in known if len(p) > 1], key=lambda pair: -len(pair[0])
        )

    def scrub(self, text: str) -> str:
        """``text`` (a DuckDB error message) without the server's own paths in it, nor the
        stack trace DuckDB appends to an INTERNAL error (its library's path, addresses)."""
        text = text.split(_STACK_TRACE, 1)[0]
        for path, label in self._paths:
            text = text.replace(path, label)
        return text

    def on_close(self, closer: Callable[[], object]) -> None:
        """Run ``closer`` (a background thread's stop, say) when the storage closes."""
        self._closers.append(closer)

    def close(self) -> None:
        if not self._closed:
            # The connection's close would wait for every query still running.
            self.running_queries.stop_all()
            for closer in self._closers:
                closer()
            self._before_close()
            self._root.close()
            self._closed = True

    def _before_close(self) -> None:
        """Work of the target's own before the connection closes (a last checkpoint...)."""

    # -- lifecycle -----------------------------------------------------------------------------

    def ready(self) -> str | None:
        """Why the storage cannot take writes now (None: it can)."""
        return self._database_problem()

    def _database_problem(self) -> str | None:
        """Why the database itself cannot run a statement (None: it can)."""
        if self._closed:
            return "the database is closed"
        try:
            # An INTERNAL error invalidates DuckDB's database: every later statement fails
            # until the process restarts, which only a readiness check that runs one can tell.
            with contextlib.closing(self._root.cursor()) as cur:
                cur.execute("SELECT 1").fetchall()
        except duckdb.Error as exc:
            reason = self.scrub(str(exc)).splitlines()[0][:300]
            return f"the database cannot run a statement ({reason}); restart the server"
        return None

    def query_failure(self, exc: BaseException) -> ArrowportError | None:
        """Asked after a query failed: the error to answer when the storage, not the query, is
        at fault (None: the query's own error stands). Here that is a file that failed to read,
        or a disk with no room to spill: unless ``duckdb.allow_file_access`` lets queries read
        files of their own, every I/O error is the database's. So is an INTERNAL error after
        which DuckDB refuses every statement until the process restarts (most do that)."""
        invalidated = self._invalidated(exc)
        if invalidated is not None:
            return invalidated
        if not is_io_failure(exc) or self.guard.file_access:
            return None
        return io_error(exc, self.scrub(str(exc)))

    def _invalidated(self, exc: BaseException) -> StorageError | None:
        """The error to answer for an INTERNAL error after which DuckDB refuses every statement
        until the process restarts (most do that); None for any other error."""
        if isinstance(exc, duckdb.InternalException | duckdb.FatalException):
            problem = self._database_problem()
            if problem is not None:
                return StorageError(f"{problem} (/ready answers 503 until then)")
        return None

    def size_bytes(self) -> int:
        return 0

    def buffer_limit_bytes(self) -> int:
        """DuckDB's ``memory_limit`` in bytes: what its buffers may hold, and keep, in memory."""
        # A cursor of its own, closed at once: a result left open on the root connection would
        # hold its transaction, and no checkpoint could run.
        with self._root.cursor() as cur:
            row = cur.execute("SELECT current_setting('memory_limit')").fetchone()
        number, _, unit = str(row[0] if row else "0 bytes").partition(" ")
        return int(float(number) * _SIZE_UNITS.get(unit, 0))  # unknown: no floor from it

    def stats(self) -> dict[str, float]:
        """Figures of the target's own for the metrics, by name (``*_total``: counters)."""
        return {}

    # -- catalog -------------------------------------------------------------------------------

    def table_columns(self, cur: duckdb.DuckDBPyConnection, table: str) -> list[Column] | None:
        """Committed columns of ``table`` (None if it does not exist); cached."""
        return self.catalog.load(cur, table)

    # -- reads ---------------------------------------------------------------------------------

    def query(
        self, sql: str, params: Parameters = None, stop: QueryStop | None = None
    ) -> QueryResult:
        """Start a read-only query; the caller iterates (or closes) the result."""
        return run_query(self, sql, params, stop)

    def read_table(self, name: str) -> QueryResult:
        return read_table(self, name)

    def tables(self) -> list[TableInfo]:
        return list_tables(self)

    def table(self, name: str) -> TableInfo:
        return describe_table(self, name)

    def table_schemas(self) -> list[tuple[TableInfo, pa.Schema]]:
        return list_table_schemas(self)

    def query_schema(
        self, sql: str, params: Parameters = None, stop: QueryStop | None = None
    ) -> pa.Schema | None:
        return query_schema(self, sql, params, stop)

    def table_schema(self, name: str) -> pa.Schema:
        return table_schema(self, name)

    # -- writes --------------------------------------------------------------------------------

    def begin(self, cur: duckdb.DuckDBPyConnection, reshaping: bool) -> None:
        """Start a write transaction on ``cur`` (``reshaping``: one that creates, replaces or
        alters a table)."""
        cur.begin()

    def before_commit(self, cur: duckdb.DuckDBPyConnection, jobs: Sequence[WriteJob]) -> None:
        """The target's last statements in a write transaction (none here)."""

    def translate(self, exc: BaseException) -> BaseException:
        """A failure of a write transaction as the client should hear it (without the server's
        paths or secrets in its message): an INTERNAL error that invalidated the database is a
        503 ``storage_error``, as it is for a query."""
        translated = self._invalidated(exc) or translate_error(exc)
        if isinstance(translated, ArrowportError) and translated is not exc:
            translated.message = self.scrub(translated.message)
            translated.args = (translated.message,)
        return translated

    def ledger(self, cur: duckdb.DuckDBPyConnection) -> DeliveryLedger:
        """The delivery ledger of one transaction on ``cur``."""
        return DeliveryLedger(cur)

    def write_one(self, job: WriteJob, dry_run: bool = False) -> WriteOutcome:
        """Write one job in its own transaction; raises its error. A dry run rolls back."""
        outcome = self.write([job], dry_run)[0]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    @staticmethod
    def lock_names(job: WriteJob) -> set[str]:
        """Every lock ``job`` may need (its table's DDL lock, its delivery keys' stripes), named as
        :class:`LocksBusy` names them."""
        names = {table_lock_name(job.table)}
        if job.delivery is not None:
            names |= {delivery_lock_name(key) for key in job.delivery.lock_names()}
        return names

    def write(
        self, jobs: Sequence[WriteJob], dry_run: bool = False, block: bool = True
    ) -> list[WriteOutcome | ArrowportError]:
        """Write jobs in one transaction: every written row lands, or none does.

        A job refused by its delivery check (duplicate, gap, key conflict) gets its answer in its
        slot without failing the others; any other failure aborts the whole transaction and is
        raised. Appends of the same table and schema are merged into one insert. With
        ``block=False``, a lock held by another write raises :class:`LocksBusy` at once.
        """
        for job in jobs:
            check_table_name(job.table)
        cur = self.connect()
        try:
            lock_names = {
                delivery_lock_name(key)
                for job in jobs
                if job.delivery
                for key in job.delivery.lock_names()
            }
            # DDL (create, replace, alter) on a table is serialised; plain appends are not.
            ddl_tables = {
                job.table.lower()
                for job in jobs
                if job.mode != "append" or job.policy.schema_policy == "evolve"
            }
            with self.catalog_turn():
                appended = {
                    table: self.table_columns(cur, table)
                    for table in {job.table.lower() for job in jobs} - ddl_tables
                }
            ddl_tables |= {table for table, columns in appended.items() if columns is None}
            lock_names |= {table_lock_name(table) for table in ddl_tables}
            with self._locks.holding(lock_names, jobs, block):
                reshaping = self._reshapes(cur, jobs, appended)
                with self.transaction_turn(reshaping):
                    return self._transaction(cur, jobs, dry_run, reshaping)
        except (duckdb.InternalException, duckdb.FatalException) as exc:
            # Before the transaction (the table's columns): the database may be invalidated.
            invalidated = self._invalidated(exc)
            if invalidated is None:
                raise
            raise invalidated from None
        finally:
            cur.close()

    def _reshapes(
        self,
        cur: duckdb.DuckDBPyConnection,
        jobs: Sequence[WriteJob],
        appended: dict[str, list[Column] | None],
    ) -> bool:
        """Whether writing ``jobs`` creates, replaces or alters a table. Tables under a DDL lock
        are looked at again now that the lock is held (no write of this process changes them
        meanwhile); the others, plain appends to existing tables, as ``appended`` found them."""
        if any(job.mode == "replace" for job in jobs):
            return True  # whatever the table holds now
        columns = dict(appended)
        with self.catalog_turn():
            for job in jobs:
                table = job.table.lower()
                if table not in columns:
                    columns[table] = self.table_columns(cur, table)
                if reshapes(job.table, job.policy, job.data.schema, columns[table]):
                    return True
        return False

    def transaction_turn(self, reshaping: bool) -> contextlib.AbstractContextManager[None]:
        """Held by a write transaction throughout (``reshaping``: one that creates, replaces or
        alters a table; see :mod:`arrowport.storage.lake_turns`): nothing to wait for here."""
        return contextlib.nullcontext()

    def commit_turn(self, reshaping: bool) -> contextlib.AbstractContextManager[None]:
        """Held by a write transaction's commit (``reshaping``: see :meth:`transaction_turn`):
        nothing to wait for here."""
        return contextlib.nullcontext()

    def _transaction(
        self,
        cur: duckdb.DuckDBPyConnection,
        jobs: Sequence[WriteJob],
        dry_run: bool,
        reshaping: bool,
    ) -> list[WriteOutcome | ArrowportError]:
        view = TransactionCatalog(self.catalog, cur)
        try:
            self.begin(cur, reshaping)  # on a lake, a read of its catalog: it may fail
            outcomes = self._write_jobs(view, jobs)
            self.before_commit(cur, jobs)
            if abandoned(jobs):
                raise TruncatedStream(
                    "the client cancelled the upload before its commit; nothing was written"
                )
            if dry_run:
                cur.rollback()
            else:
                with self.commit_turn(reshaping):
                    cur.commit()
        except BaseException as exc:
            with contextlib.suppress(duckdb.Error):
                cur.rollback()
            translated = self.translate(exc)
            if translated is exc:
                raise
            raise translated from exc
        finally:
            view.close()
        return outcomes

    def _write_jobs(
        self, catalog: TransactionCatalog, jobs: Sequence[WriteJob]
    ) -> list[WriteOutcome | ArrowportError]:
        ledger = self.ledger(catalog.cur)
        answers: list[WriteOutcome | ArrowportError | Duplicate | None] = []
        for job in jobs:
            verdict: WriteOutcome | ArrowportError | Duplicate | None = None
            if job.delivery is not None:
                try:
                    verdict = ledger.check(job.delivery)
                except ArrowportError as exc:
                    verdict = exc
                if verdict is None:
                    # Claim the key/offset now so a later job of this group sees it.
                    ledger.claim(job.delivery, len(answers))
            answers.append(verdict)
        to_write = [i for i, verdict in enumerate(answers) if verdict is None]
        for members in merge_appends([jobs[i] for i in to_write], to_write):
            first = jobs[members[0]]
            data = concat([jobs[i].data for i in members])
            merged = write_table(catalog, first.table, data, first.policy)
            for i in members:
                job = jobs[i]
                # Merged appends each wrote all their rows; a write on its own, what DuckDB
                # wrote (an upsert keeping the last of a key's rows writes fewer than it sent).
                rows = job.data.num_rows if len(members) > 1 else merged.rows
                outcome = WriteOutcome(
                    merged.table, rows, merged.created, actions=tuple(merged.actions)
                )
                answers[i] = outcome
                if job.delivery is not None:
                    ledger.record(job.delivery, outcome.to_record(), i)
        ledger.finish()
        results: list[WriteOutcome | ArrowportError] = []
        for job, answer in zip(jobs, answers, strict=True):
            if isinstance(answer, Duplicate):
                results.append(_duplicate_outcome(job, answer, ledger))
            else:
                assert answer is not None
                results.append(answer)
        return results

    # -- delivery state ------------------------------------------------------------------------

    def last_sequence(self, stream: str, producer_id: str) -> int | None:
        with self.cursor() as cur:
            return self.ledger(cur).last_sequence(stream, producer_id)

    def expire_idempotency_keys(self, older_than_hours: float) -> int:
        with self.cursor() as cur:
            return self.ledger(cur).expire(older_than_hours)


def _duplicate_outcome(job: WriteJob, duplicate: Duplicate, ledger: DeliveryLedger) -> WriteOutcome:
    record = duplicate.result
    if duplicate.owner is not None:
        record = ledger.recorded(duplicate.owner)
    return WriteOutcome(
        str(record.get("table", job.table)),
        int(record.get("rows", 0)),
        created=False,
        duplicate=True,
        last_sequence=record.get("last_sequence"),
    )
