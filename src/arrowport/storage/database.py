"""The DuckDB-file target: one database file per process, its write-ahead log checkpointed in the
background, its delivery ledger kept by primary keys in the same file.

Everything a target shares (transactions, locks, reads) lives in :mod:`arrowport.storage.engine`.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import duckdb

from arrowport.config import DuckDBSettings
from arrowport.errors import StorageError
from arrowport.storage.background import Checkpointer, Periodic
from arrowport.storage.delivery import SCHEMA_SQL
from arrowport.storage.engine import Engine
from arrowport.storage.identifiers import INTERNAL_SCHEMA, quote
from arrowport.storage.sql_guard import ReadGuard
from arrowport.storage.writes import LocksBusy, WriteJob, WriteOutcome, translate_error

__all__ = [
    "Database",
    "LocksBusy",
    "WriteJob",
    "WriteOutcome",
    "open_connection",
    "size_problem",
    "translate_error",
]


def open_connection(
    settings: DuckDBSettings, path: str, extra: dict[str, str | bool | int] | None = None
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the server's settings: nothing is ever downloaded or loaded
    behind its back, no SQL name ever resolves to a Python variable of the server's, time zone
    columns read back in UTC, spill to disk capped."""
    _check_sizes(settings)
    config: dict[str, str | bool | int | float | list[str]] = {
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
        "python_enable_replacements": False,
        # DuckDB's allocator (jemalloc) hands freed pages back to the system only as DuckDB
        # allocates again, unless a thread of its own does it: after a query that took 600 MB,
        # an idle server stayed 600 MB larger (with the thread: back within two seconds).
        "allocator_background_threads": True,
        **(extra or {}),
    }
    if settings.threads:
        config["threads"] = settings.threads
    if settings.memory_limit:
        config["memory_limit"] = settings.memory_limit
    try:
        root = duckdb.connect(path, config=config)
    except duckdb.Error as exc:
        raise StorageError(f"cannot open database {path}: {exc}") from exc
    root.execute("SET GLOBAL TimeZone = 'UTC'")
    # Set on the open database: DuckDB 1.5 ignores this setting when it is given at connect
    # time and spills up to 90% of the disk instead.
    root.execute("SET GLOBAL max_temp_directory_size = ?", [settings.max_temp_directory_size])
    return root


def size_problem(settings: DuckDBSettings) -> str | None:
    """One line naming a size setting DuckDB cannot read (None: it reads them all). Only
    DuckDB knows what it reads as a size; the server asks before it starts, with the other
    settings' checks."""
    with contextlib.closing(duckdb.connect(":memory:")) as probe:
        for name in ("memory_limit", "max_temp_directory_size"):
            value = getattr(settings, name)
            if not value:
                continue
            try:
                probe.execute(f"SET {name} = ?", [value])
            except duckdb.Error as exc:
                reason = str(exc).splitlines()[0]
                return (
                    f"invalid configuration: duckdb.{name}: {value!r} is not a size DuckDB "
                    f"reads ({reason}); write it as 2GB or 512MiB"
                )
    return None


def _check_sizes(settings: DuckDBSettings) -> None:
    """A size DuckDB cannot read is refused naming its setting (it had been a traceback, or
    "cannot open database: Parser Error"), before the database opens."""
    problem = size_problem(settings)
    if problem is not None:
        raise StorageError(problem)


class Database(Engine):
    """The process's DuckDB database file. Thread-safe: every caller gets its own cursor."""

    def __init__(
        self,
        settings: DuckDBSettings,
        query_timeout: float | None = None,
        idempotency_window_hours: float = 24.0,
    ) -> None:
        self.path = settings.path
        if self.path != ":memory:":
            parent = Path(self.path).parent
            try:
                parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                why = "a file is in its way" if isinstance(exc, FileExistsError) else exc.strerror
                raise StorageError(
                    f"cannot create the database's directory {parent}: {why or exc}"
                ) from None
        # DuckDB's inline checkpoint becomes a backstop; the Checkpointer below does the work.
        backstop = f"{max(1024**3, 4 * settings.checkpoint_wal_bytes)}B"
        root = open_connection(settings, self.path, {"checkpoint_threshold": backstop})
        super().__init__(root, query_timeout)
        root.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(INTERNAL_SCHEMA)}")
        for statement in SCHEMA_SQL:
            root.execute(statement)
        if not settings.allow_file_access:
            # From here on SQL sees only this database: no read_csv('/etc/passwd'), ATTACH,
            # COPY ... TO, LOAD. DuckDB refuses to turn this back on while the database is open,
            # and registered Arrow data still scans (replacement scans of Python variables do not).
            root.execute("SET enable_external_access = false")
        self.guard = ReadGuard(settings.allow_file_access, self._own_files())
        if self.path != ":memory:":
            data_dir = os.path.dirname(os.path.realpath(self.path))
            self.hide_paths(
                (os.path.realpath(self.path), "<database>"),
                (self.path, "<database>"),
                (data_dir, "<data directory>"),
            )
        else:
            self.hide_paths()
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

    def _before_close(self) -> None:
        self._key_expiry.stop()
        if self._checkpointer is not None:
            self._checkpointer.stop()
        with contextlib.suppress(duckdb.Error):
            self._root.execute("CHECKPOINT")

    def size_bytes(self) -> int:
        if self.path == ":memory:":
            return 0
        total = 0
        for suffix in ("", ".wal"):
            with contextlib.suppress(OSError):
                total += Path(self.path + suffix).stat().st_size
        return total
