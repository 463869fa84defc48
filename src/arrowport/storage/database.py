"""One DuckDB database per process: connections, transactions and the write of Arrow data.

Writers run on worker threads, each on its own cursor. DuckDB lets concurrent transactions append
to the same table; what it does not allow is two transactions creating or replacing the same table,
so DDL on a table is serialised by a per-table lock held until the transaction ends. Writes of the
same idempotency key or producer are serialised too, by one of :data:`DELIVERY_STRIPES` locks the
key hashes to (a lock per key ever seen would grow without bound).
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa

from arrowport.config import DuckDBSettings
from arrowport.errors import (
    ArrowportError,
    ConstraintViolation,
    InsufficientStorage,
    InvalidValue,
    SchemaConflict,
    StorageError,
    TruncatedStream,
    WriteConflict,
    is_disk_full,
)
from arrowport.options import WriteMode
from arrowport.storage.background import Checkpointer, Periodic
from arrowport.storage.catalog import TableCatalog, TransactionCatalog
from arrowport.storage.delivery import (
    SCHEMA_SQL,
    Delivery,
    DeliveryLedger,
    Duplicate,
    expire_keys,
    last_sequence,
)
from arrowport.storage.identifiers import INTERNAL_SCHEMA, check_table_name, quote
from arrowport.storage.schema import Column
from arrowport.storage.sql_guard import ReadGuard
from arrowport.storage.table_writer import WritePolicy, write_table

# Delivery keys share this many locks; two keys on one stripe merely wait for each other.
DELIVERY_STRIPES = 1024


def _delivery_lock_name(name: str) -> str:
    return f"d:{zlib.crc32(name.encode()) % DELIVERY_STRIPES}"


class LocksBusy(Exception):
    """Another write holds locks this one needs (only raised when asked not to wait)."""

    def __init__(self, names: set[str]) -> None:
        super().__init__(", ".join(sorted(names)))
        self.names = names


@dataclass
class WriteJob:
    """Rows for one table, written by name in a transaction, with optional delivery checks."""

    table: str
    policy: WritePolicy
    data: pa.RecordBatchReader | pa.Table
    delivery: Delivery | None = None
    # True once the client has given up (a cancelled upload): its rows must not commit.
    abandoned: Callable[[], bool] | None = None

    @property
    def mode(self) -> WriteMode:
        return self.policy.mode


@dataclass(frozen=True)
class WriteOutcome:
    table: str
    rows: int
    created: bool
    duplicate: bool = False
    last_sequence: int | None = None
    actions: tuple[str, ...] = ()

    def to_record(self) -> dict[str, object]:
        return {"table": self.table, "rows": self.rows, "created": self.created}


class Database:
    """The process's DuckDB database. Thread-safe: every caller gets its own cursor."""

    def __init__(
        self,
        settings: DuckDBSettings,
        query_timeout: float | None = None,
        idempotency_window_hours: float = 24.0,
    ) -> None:
        self.path = settings.path
        self.query_timeout = query_timeout
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        config: dict[str, str | bool | int | float | list[str]] = {}
        if settings.threads:
            config["threads"] = settings.threads
        if settings.memory_limit:
            config["memory_limit"] = settings.memory_limit
        # Nothing is ever downloaded or loaded behind the server's back.
        config["autoinstall_known_extensions"] = False
        config["autoload_known_extensions"] = False
        # DuckDB's inline checkpoint becomes a backstop; the Checkpointer below does the work.
        config["checkpoint_threshold"] = f"{max(1024**3, 4 * settings.checkpoint_wal_bytes)}B"
        try:
            self._root = duckdb.connect(self.path, config=config)
        except duckdb.Error as exc:
            raise StorageError(f"cannot open database {self.path}: {exc}") from exc
        # Time zone columns read back in UTC whatever the machine's local zone is.
        self._root.execute("SET GLOBAL TimeZone = 'UTC'")
        # Set on the open database: DuckDB 1.5 ignores this setting when it is given at connect
        # time and spills up to 90% of the disk instead.
        self._root.execute(
            "SET GLOBAL max_temp_directory_size = ?", [settings.max_temp_directory_size]
        )
        self._root.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(INTERNAL_SCHEMA)}")
        for statement in SCHEMA_SQL:
            self._root.execute(statement)
        if not settings.allow_file_access:
            # From here on SQL sees only this database: no read_csv('/etc/passwd'), ATTACH,
            # COPY ... TO, LOAD. DuckDB refuses to turn this back on while the database is open,
            # and registered Arrow data still scans (replacement scans of Python variables do not).
            self._root.execute("SET enable_external_access = false")
        self.guard = ReadGuard(settings.allow_file_access, self._own_files())
        home = os.path.expanduser("~")
        data_dir = os.path.dirname(os.path.realpath(self.path)) if self.path != ":memory:" else ""
        # Longest first, so that a path is never half replaced by a shorter one it contains.
        self._paths = sorted(
            [
                (p, label)
                for p, label in (
                    (os.path.realpath(self.path), "<database>"),
                    (self.path, "<database>"),
                    (data_dir, "<data directory>"),
                    (os.path.realpath(home), "~"),
                    (home, "~"),
                    (os.path.realpath(tempfile.gettempdir()), "<temp>"),
                )
                if len(p) > 1
            ],
            key=lambda pair: -len(pair[0]),
        )
        self._locks_guard = threading.Lock()
        self._table_locks: dict[str, threading.Lock] = {}
        self._delivery_locks = [threading.Lock() for _ in range(DELIVERY_STRIPES)]
        self._closed = False
        self.catalog = TableCatalog()
        self._checkpointer = (
            None
            if self.path == ":memory:"
            else Checkpointer(self.connect, Path(self.path + ".wal"), settings.checkpoint_wal_bytes)
        )
        self._key_expiry = Periodic(
            "arrowport-key-expiry",
            60.0,
            lambda: self.expire_idempotency_keys(idempotency_window_hours),
        )

    def _own_files(self) -> list[str]:
        """The database's files (data, write-ahead log, spill directory): no query reads them."""
        if self.path == ":memory:":
            return []
        with self._root.cursor() as cur:
            rows = cur.execute("SELECT current_setting('temp_directory')").fetchall()
        temp = str(rows[0][0]) if rows and rows[0][0] else self.path + ".tmp"
        return [self.path, self.path + ".wal", temp]

    def scrub(self, text: str) -> str:
        """``text`` (a DuckDB error message) without the server's own paths in it."""
        for path, label in self._paths:
            text = text.replace(path, label)
        return text

    # -- connections ---------------------------------------------------------------------------

    def connect(self) -> duckdb.DuckDBPyConnection:
        """A new connection to the database; the caller closes it."""
        if self._closed:
            raise StorageError("the database is closed")
        return self._root.cursor()

    @contextlib.contextmanager
    def cursor(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection of its own for the calling thread, closed on exit."""
        cur = self.connect()
        try:
            yield cur
        finally:
            cur.close()

    def close(self) -> None:
        if not self._closed:
            self._key_expiry.stop()
            if self._checkpointer is not None:
                self._checkpointer.stop()
            with contextlib.suppress(duckdb.Error):
                self._root.execute("CHECKPOINT")
            self._root.close()
            self._closed = True

    def size_bytes(self) -> int:
        if self.path == ":memory:":
            return 0
        total = 0
        for suffix in ("", ".wal"):
            with contextlib.suppress(OSError):
                total += Path(self.path + suffix).stat().st_size
        return total

    # -- catalog -------------------------------------------------------------------------------

    def table_columns(self, cur: duckdb.DuckDBPyConnection, table: str) -> list[Column] | None:
        """Committed columns of ``table`` (None if it does not exist); cached."""
        return self.catalog.load(cur, table)

    # -- writes --------------------------------------------------------------------------------

    def _lock_for(self, name: str) -> threading.Lock:
        """The lock called ``name``: ``t:<table>`` (one per table) or ``d:<stripe>``."""
        kind, _, rest = name.partition(":")
        if kind == "d":
            return self._delivery_locks[int(rest)]
        with self._locks_guard:
            return self._table_locks.setdefault(name.lower(), threading.Lock())

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
        names = {f"t:{job.table.lower()}"}
        if job.delivery is not None:
            names |= {_delivery_lock_name(name) for name in job.delivery.lock_names()}
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
        with self.cursor() as cur:
            lock_names = {
                _delivery_lock_name(name)
                for job in jobs
                if job.delivery
                for name in job.delivery.lock_names()
            }
            # DDL (create, replace, alter) on a table is serialised; plain appends are not.
            ddl_tables = {job.table.lower() for job in jobs if job.mode != "append"}
            for table in {job.table.lower() for job in jobs} - ddl_tables:
                if self.table_columns(cur, table) is None:
                    ddl_tables.add(table)
            ddl_tables |= {
                job.table.lower() for job in jobs if job.policy.schema_policy == "evolve"
            }
            lock_names |= {f"t:{table}" for table in ddl_tables}
            with contextlib.ExitStack() as held:
                busy = set()
                for name in sorted(lock_names):
                    lock = self._lock_for(name)
                    if lock.acquire(blocking=block):
                        held.callback(lock.release)
                    else:
                        busy.add(name)
                if busy:
                    raise LocksBusy(busy)
                cur.begin()
                view = TransactionCatalog(self.catalog, cur)
                try:
                    outcomes = self._write_jobs(view, jobs)
                    if any(job.abandoned is not None and job.abandoned() for job in jobs):
                        raise TruncatedStream(
                            "the client cancelled the upload before its commit; nothing was written"
                        )
                    if dry_run:
                        cur.rollback()
                    else:
                        cur.commit()
                except BaseException as exc:
                    with contextlib.suppress(duckdb.Error):
                        cur.rollback()
                    translated = translate_error(exc)
                    if translated is exc:
                        raise
                    raise translated from exc
                finally:
                    view.close()
        return outcomes

    def _write_jobs(
        self, catalog: TransactionCatalog, jobs: Sequence[WriteJob]
    ) -> list[WriteOutcome | ArrowportError]:
        ledger = DeliveryLedger(catalog.cur)
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
        for members in _merge_appends([jobs[i] for i in to_write], to_write):
            first = jobs[members[0]]
            data = _concat([jobs[i].data for i in members])
            merged = write_table(catalog, first.table, data, first.policy)
            for i in members:
                job = jobs[i]
                rows = job.data.num_rows if isinstance(job.data, pa.Table) else merged.rows
                outcome = WriteOutcome(
                    merged.table, rows, merged.created, actions=tuple(merged.actions)
                )
                answers[i] = outcome
                if job.delivery is not None:
                    ledger.record(job.delivery, outcome.to_record(), i)
        results: list[WriteOutcome | ArrowportError] = []
        for job, answer in zip(jobs, answers, strict=True):
            if isinstance(answer, Duplicate):
                results.append(_duplicate_outcome(job, answer, ledger))
            else:
                assert answer is not None
                results.append(answer)
        return results

    def last_sequence(self, stream: str, producer_id: str) -> int | None:
        with self.cursor() as cur:
            return last_sequence(cur, stream, producer_id)

    def expire_idempotency_keys(self, older_than_hours: float) -> int:
        with self.cursor() as cur:
            return expire_keys(cur, older_than_hours)


def _merge_appends(jobs: Sequence[WriteJob], indexes: Sequence[int]) -> list[list[int]]:
    """Group job indexes: appends of one table and schema share an insert; others stand alone."""
    groups: dict[object, list[int]] = {}
    for job, index in zip(jobs, indexes, strict=True):
        mergeable = job.mode == "append" and isinstance(job.data, pa.Table)
        key: object = (job.table.lower(), job.policy, job.data.schema) if mergeable else index
        groups.setdefault(key, []).append(index)
    return list(groups.values())


def _concat(parts: Sequence[pa.RecordBatchReader | pa.Table]) -> pa.RecordBatchReader | pa.Table:
    if len(parts) == 1:
        return parts[0]
    # One contiguous chunk: DuckDB scans it ~10% faster than many small ones (a cheap copy of
    # a group of small writes).
    return pa.concat_tables([p for p in parts if isinstance(p, pa.Table)]).combine_chunks()


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


# DuckDB's write-write conflicts ("Catalog write-write conflict on create with ...", "Conflict on
# update!", "Transaction conflict: attempting to insert into table ..."), matched once quoted names
# are removed so that a table called "conflict" is not mistaken for one.
_CONFLICT_RE = re.compile(r"\bconflict\b", re.IGNORECASE)
_QUOTED_RE = re.compile(r'"(?:[^"]|"")*"')


def _is_write_conflict(exc: duckdb.TransactionException) -> bool:
    return bool(_CONFLICT_RE.search(_QUOTED_RE.sub("", str(exc))))


def translate_error(exc: BaseException) -> BaseException:
    """Map DuckDB's failures to client-visible errors, by exception type.

    Only a genuine write-write conflict is a ``write_conflict`` (the one answer that invites a
    retry). Errors caused by the batch or the table it meets are 4xx; a failure of the database
    itself is a ``storage_error``; anything else (DuckDB internal errors, a transaction in a state
    this module never leaves it in, exceptions not from DuckDB) passes through unchanged.
    """
    if isinstance(exc, ArrowportError) or not isinstance(exc, duckdb.Error):
        return exc
    text = str(exc)
    if isinstance(exc, duckdb.TransactionException):
        if _is_write_conflict(exc):
            return WriteConflict(f"a concurrent write changed the same table; retry: {text}")
        return exc
    if isinstance(exc, duckdb.ConstraintException):
        return ConstraintViolation(text)
    if isinstance(exc, duckdb.DependencyException):
        return SchemaConflict(f"the table's dependencies do not allow this change: {text}")
    if isinstance(exc, duckdb.DataError):
        # Conversion, out of range, type mismatch: a value of the batch does not fit.
        return InvalidValue(text)
    if isinstance(exc, duckdb.IOException):
        if is_disk_full(exc):
            return InsufficientStorage(f"no room left to write the database: {text}")
        return StorageError(f"database I/O error: {text}")
    if isinstance(exc, duckdb.OutOfMemoryException):
        return StorageError(f"the database is out of memory: {text}")
    if isinstance(exc, duckdb.ProgrammingError | duckdb.NotSupportedError):
        # Binder, catalog, parser, invalid input, not implemented: the statement was built from
        # the batch's names and types (e.g. a value for a generated column, an Arrow map with a
        # duplicate key), so the request, not the server, is at fault.
        return InvalidValue(f"DuckDB refused the batch: {text}")
    return exc
