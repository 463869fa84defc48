"""The read path: table listings and read-only SQL, streamed as Arrow record batches.

A query must be exactly one ``SELECT`` statement (``WITH``, ``FROM t``, ``VALUES``, ``DESCRIBE``
and ``SUMMARIZE`` included); it runs inside a ``READ ONLY`` transaction on its own cursor, so even a
statement that slipped past the type check could not change data. Unless ``duckdb.allow_file_access``
is set, the database refuses every file, extension and ``ATTACH`` (see ``Database``): a SELECT
calling ``read_csv('/etc/passwd')`` gets 403 ``read_only`` too.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa

from arrowport.errors import InvalidName, QueryError, QueryTimeout, ReadOnly, UnknownTable
from arrowport.storage.catalog import query_columns
from arrowport.storage.database import Database
from arrowport.storage.identifiers import check_table_name, quote
from arrowport.storage.schema import Column

_ALLOWED = {duckdb.StatementType.SELECT}
BATCH_ROWS = 122_880


@dataclass(frozen=True)
class TableInfo:
    name: str
    columns: list[Column]
    row_count: int

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "columns": [c.to_json() for c in self.columns],
            "row_count": self.row_count,
        }


def check_read_only(sql: str) -> None:
    """Refuse anything but a single SELECT statement (403 ``read_only``)."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryError(f"cannot parse the query: {exc}") from None
    if len(statements) != 1:
        raise ReadOnly(
            f"send exactly one statement per query (got {len(statements)})",
            statements=len(statements),
        )
    kind = statements[0].type
    if kind not in _ALLOWED:
        raise ReadOnly(
            f"only read-only SELECT queries are allowed here; this is a {kind.name} statement",
            statement_type=kind.name,
        )


def _outside(exc: duckdb.Error) -> ReadOnly:
    return ReadOnly(
        "queries may read only this database's tables; files, extensions and other databases "
        f"are off (duckdb.allow_file_access): {exc}"
    )


class QueryResult:
    """A running query: its schema now, its batches as they are fetched."""

    def __init__(
        self,
        cursor: duckdb.DuckDBPyConnection,
        reader: pa.RecordBatchReader,
        deadline: _Deadline,
    ) -> None:
        self._cursor = cursor
        self.reader = reader
        self.schema: pa.Schema = reader.schema
        self._deadline = deadline

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        try:
            yield from self.reader
        except duckdb.PermissionException as exc:
            raise _outside(exc) from None
        except (duckdb.Error, pa.ArrowException, OSError) as exc:
            # DuckDB's errors while rows are fetched reach us through the Arrow reader.
            self._deadline.check()
            if "Permission Error" in str(exc):
                raise ReadOnly(f"the query tried to reach outside the database: {exc}") from None
            raise QueryError(f"query failed: {exc}") from None
        finally:
            self.close()

    def read_all(self) -> pa.Table:
        return pa.Table.from_batches(list(self), schema=self.schema)

    def close(self) -> None:
        self._deadline.cancel()
        with contextlib.suppress(duckdb.Error):
            self._cursor.execute("ROLLBACK")
        self._cursor.close()


class _Deadline:
    """Interrupts a query's cursor when its time is up (``limits.query_timeout_seconds``)."""

    def __init__(self, cursor: duckdb.DuckDBPyConnection, seconds: float | None) -> None:
        self._seconds = seconds
        self.expired = False
        self._timer: threading.Timer | None = None
        if seconds is not None:
            self._timer = threading.Timer(seconds, self._expire, args=(cursor,))
            self._timer.daemon = True
            self._timer.start()

    def _expire(self, cursor: duckdb.DuckDBPyConnection) -> None:
        self.expired = True
        with contextlib.suppress(duckdb.Error):
            cursor.interrupt()

    def check(self) -> None:
        """Raise 408 if the query failed because its time ran out."""
        if self.expired:
            raise QueryTimeout(
                f"the query ran longer than {self._seconds:g} seconds and was stopped "
                "(limits.query_timeout_seconds)"
            )

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


def run_query(db: Database, sql: str, params: Sequence[Any] | None = None) -> QueryResult:
    """Start a read-only query; the caller iterates (or closes) the result."""
    check_read_only(sql)
    cursor = db.connect()
    deadline = _Deadline(cursor, db.query_timeout)
    try:
        cursor.execute("BEGIN TRANSACTION READ ONLY")
        cursor.execute(sql, list(params) if params else None)
        reader = cursor.to_arrow_reader(BATCH_ROWS)
    except BaseException as exc:
        deadline.cancel()
        cursor.close()
        deadline.check()
        if isinstance(exc, duckdb.TransactionException):
            raise ReadOnly(f"the query tried to write: {exc}") from None
        if isinstance(exc, duckdb.PermissionException):
            raise _outside(exc) from None
        if isinstance(exc, duckdb.Error):
            raise QueryError(f"query failed: {exc}") from None
        raise
    return QueryResult(cursor, reader, deadline)


@contextlib.contextmanager
def _snapshot(db: Database) -> Iterator[duckdb.DuckDBPyConnection]:
    """A cursor inside a ``READ ONLY`` transaction: every lookup sees one committed state."""
    with db.cursor() as cur:
        cur.execute("BEGIN TRANSACTION READ ONLY")
        try:
            yield cur
        finally:
            with contextlib.suppress(duckdb.Error):
                cur.execute("ROLLBACK")


def _describe(cur: duckdb.DuckDBPyConnection, name: str) -> TableInfo | None:
    """``name``'s columns and row count (the name as stored), or None if there is no such table."""
    columns = query_columns(cur, name)
    if columns is None:
        return None
    stored = cur.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() "
        "AND schema_name = 'main' AND lower(table_name) = lower(?)",
        [name],
    ).fetchone()
    actual = stored[0] if stored else name
    count = cur.execute(f"SELECT count(*) FROM {quote(actual)}").fetchone()
    return TableInfo(actual, columns, int(count[0]) if count else 0)


def list_tables(db: Database) -> list[TableInfo]:
    """Every table of the database, as one consistent snapshot.

    Names come from DuckDB's catalog, so they are not held to :func:`check_table_name`: a table
    created by SQL under any name (``"bad name"``) is listed too.
    """
    with _snapshot(db) as cur:
        names = [
            row[0]
            for row in cur.execute(
                "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() "
                "AND schema_name = 'main' AND NOT internal ORDER BY table_name"
            ).fetchall()
        ]
        described = [_describe(cur, name) for name in names]
    return [info for info in described if info is not None]


def _check_name(cur: duckdb.DuckDBPyConnection, name: str) -> None:
    """400 for a name that is neither a plain identifier nor, exactly, an existing table's.

    Tables created by SQL may have any name; as every name is quoted, such a table can still be
    described and read (a listing shows it, so Flight's ``list_flights`` describes it too).
    """
    try:
        check_table_name(name)
    except InvalidName:
        exists = cur.execute(
            "SELECT 1 FROM duckdb_tables() WHERE database_name = current_database() "
            "AND schema_name = 'main' AND NOT internal AND table_name = ?",
            [name],
        ).fetchone()
        if exists is None:
            raise


def describe_table(db: Database, name: str) -> TableInfo:
    with _snapshot(db) as cur:
        _check_name(cur, name)
        info = _describe(cur, name)
    if info is None:
        raise UnknownTable(f"table {name!r} does not exist", table=name)
    return info


def read_table(db: Database, name: str) -> QueryResult:
    """Every row of table ``name`` (404 if it does not exist), streamed like a query."""
    info = describe_table(db, name)
    return run_query(db, f"SELECT * FROM {quote(info.name)}")


def query_schema(db: Database, sql: str, params: Sequence[Any] | None = None) -> pa.Schema:
    """The Arrow schema of ``sql``'s result, without computing its rows.

    For Flight's ``get_schema`` / ``get_flight_info``, which must not run a query to describe it::

        query_schema(db, "SELECT * FROM t WHERE id > ?", [10])
    """
    check_read_only(sql)
    with _snapshot(db) as cur:
        try:
            if not params:
                # A relation is planned, not run, until it is fetched; LIMIT 0 fetches nothing.
                return cur.sql(sql).limit(0).to_arrow_table().schema
            # Parameters are bound only by execute, so the query is wrapped to return no rows
            # (its own line, in case it ends with a comment). A query the wrap cannot parse
            # (a ';' followed by a comment) is run instead. Caveat: a subquery renames
            # duplicate output names (a, a -> a, a_1).
            inner = sql.strip().rstrip(";")
            try:
                wrapped = cur.execute(f"SELECT * FROM (\n{inner}\n) LIMIT 0", list(params))
                return wrapped.to_arrow_reader().schema
            except duckdb.ParserException:
                pass
        except duckdb.PermissionException as exc:
            raise _outside(exc) from None
        except duckdb.Error as exc:
            raise QueryError(f"query failed: {exc}") from None
    result = run_query(db, sql, params)
    result.close()
    return result.schema


def table_schema(db: Database, name: str) -> pa.Schema:
    """The Arrow schema of table ``name`` (404 if it does not exist), without reading rows."""
    with _snapshot(db) as cur:
        _check_name(cur, name)
        if query_columns(cur, name) is None:
            raise UnknownTable(f"table {name!r} does not exist", table=name)
        return cur.sql(f"SELECT * FROM {quote(name)}").limit(0).to_arrow_table().schema
