"""What a write is and how it ends: jobs, outcomes, and DuckDB's failures as client errors."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import duckdb
import pyarrow as pa

from arrowport.errors import (
    ArrowportError,
    ConstraintViolation,
    InsufficientStorage,
    InvalidValue,
    SchemaConflict,
    StorageError,
    WriteConflict,
    is_disk_full,
)
from arrowport.options import WriteMode
from arrowport.storage.delivery import Delivery
from arrowport.storage.table_writer import WritePolicy


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


def merge_appends(jobs: Sequence[WriteJob], indexes: Sequence[int]) -> list[list[int]]:
    """Group job indexes: appends of one table and schema share an insert; others stand alone."""
    groups: dict[object, list[int]] = {}
    for job, index in zip(jobs, indexes, strict=True):
        mergeable = job.mode == "append" and isinstance(job.data, pa.Table)
        key: object = (job.table.lower(), job.policy, job.data.schema) if mergeable else index
        groups.setdefault(key, []).append(index)
    return list(groups.values())


def concat(parts: Sequence[pa.RecordBatchReader | pa.Table]) -> pa.RecordBatchReader | pa.Table:
    if len(parts) == 1:
        return parts[0]
    # Zero-copy: the writer joins the small writes' batches into row-group-sized ones.
    return pa.concat_tables([p for p in parts if isinstance(p, pa.Table)])


# DuckDB's write-write conflicts ("Catalog write-write conflict on create with ...", "Conflict on
# update!", "Transaction conflict: attempting to insert into table ..."), matched once quoted names
# are removed so that a table called "conflict" is not mistaken for one.
_CONFLICT_RE = re.compile(r"\bconflict\b", re.IGNORECASE)
_QUOTED_RE = re.compile(r'"(?:[^"]|"")*"')


def _is_write_conflict(exc: duckdb.TransactionException) -> bool:
    return bool(_CONFLICT_RE.search(_QUOTED_RE.sub("", str(exc))))


def io_error(exc: BaseException, text: str) -> InsufficientStorage | StorageError:
    """The database failing to read or write a file (``text``: what to tell the client): 507
    for a full disk, else 503."""
    if is_disk_full(exc):
        return InsufficientStorage(f"no room left on disk for the database: {text}")
    return StorageError(f"database I/O error: {text}")


# How DuckDB words a commit whose write-ahead log could not be written.
_COMMIT_IO = "Failed to commit: Could not write file"


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
        if _COMMIT_IO in text:
            # The commit could not write the write-ahead log: DuckDB says so as a transaction
            # error (a full disk included), not as an I/O one.
            return io_error(exc, text)
        return exc
    if isinstance(exc, duckdb.ConstraintException):
        return ConstraintViolation(text)
    if isinstance(exc, duckdb.DependencyException):
        return SchemaConflict(f"the table's dependencies do not allow this change: {text}")
    if isinstance(exc, duckdb.DataError):
        # Conversion, out of range, type mismatch: a value of the batch does not fit.
        return InvalidValue(text)
    if isinstance(exc, duckdb.IOException):
        return io_error(exc, text)
    if isinstance(exc, duckdb.OutOfMemoryException):
        return StorageError(f"the database is out of memory: {text}")
    if isinstance(exc, duckdb.ProgrammingError | duckdb.NotSupportedError):
        # Binder, catalog, parser, invalid input, not implemented: the statement was built from
        # the batch's names and types (e.g. a value for a generated column, an Arrow map with a
        # duplicate key), so the request, not the server, is at fault.
        return InvalidValue(f"DuckDB refused the batch: {text}")
    return exc
