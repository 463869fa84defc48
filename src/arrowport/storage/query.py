"""The read path: table listings and read-only SQL, streamed as Arrow record batches.

A query must be exactly one ``SELECT`` statement (``WITH``, ``FROM t``, ``VALUES``, ``DESCRIBE``
and ``SUMMARIZE`` included); it runs inside a ``READ ONLY`` transaction on its own cursor, so even a
statement that slipped past the type check could not change data. Unless ``duckdb.allow_file_access``
is set, the database refuses every file, extension and ``ATTACH`` (see ``Database``): a SELECT
calling ``read_csv('/etc/passwd')`` gets 403 ``read_only`` too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa

from arrowport.errors import QueryError, ReadOnly, UnknownTable
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

    def __init__(self, cursor: duckdb.DuckDBPyConnection, reader: pa.RecordBatchReader) -> None:
        self._cursor = cursor
        self.reader = reader
        self.schema: pa.Schema = reader.schema

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        try:
            yield from self.reader
        except duckdb.PermissionException as exc:
            raise _outside(exc) from None
        except (duckdb.Error, pa.ArrowException, OSError) as exc:
            # DuckDB's errors while rows are fetched reach us through the Arrow reader.
            if "Permission Error" in str(exc):
                raise ReadOnly(f"the query tried to reach outside the database: {exc}") from None
            raise QueryError(f"query failed: {exc}") from None
        finally:
            self.close()

    def read_all(self) -> pa.Table:
        return pa.Table.from_batches(list(self), schema=self.schema)

    def close(self) -> None:
        with contextlib.suppress(duckdb.Error):
            self._cursor.execute("ROLLBACK")
        self._cursor.close()


def run_query(db: Database, sql: str, params: Sequence[Any] | None = None) -> QueryResult:
    """Start a read-only query; the caller iterates (or closes) the result."""
    check_read_only(sql)
    cursor = db.connect()
    try:
        cursor.execute("BEGIN TRANSACTION READ ONLY")
        cursor.execute(sql, list(params) if params else None)
        reader = cursor.fetch_record_batch(BATCH_ROWS)
    except duckdb.TransactionException as exc:
        cursor.close()
        raise ReadOnly(f"the query tried to write: {exc}") from None
    except duckdb.PermissionException as exc:
        cursor.close()
        raise _outside(exc) from None
    except duckdb.Error as exc:
        cursor.close()
        raise QueryError(f"query failed: {exc}") from None
    except BaseException:
        cursor.close()
        raise
    return QueryResult(cursor, reader)


def list_tables(db: Database) -> list[TableInfo]:
    with db.cursor() as cur:
        names = [
            row[0]
            for row in cur.execute(
                "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() "
                "AND schema_name = 'main' AND NOT internal ORDER BY table_name"
            ).fetchall()
        ]
    return [describe_table(db, name) for name in names]


def describe_table(db: Database, name: str) -> TableInfo:
    check_table_name(name)
    with db.cursor() as cur:
        columns = query_columns(cur, name)
        if columns is None:
            raise UnknownTable(f"table {name!r} does not exist", table=name)
        stored = cur.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() "
            "AND schema_name = 'main' AND lower(table_name) = lower(?)",
            [name],
        ).fetchone()
        actual = stored[0] if stored else name
        count = cur.execute(f"SELECT count(*) FROM {quote(actual)}").fetchone()
    return TableInfo(actual, columns, int(count[0]) if count else 0)


def read_table(db: Database, name: str) -> QueryResult:
    """Every row of table ``name`` (404 if it does not exist), streamed like a query."""
    info = describe_table(db, name)
    return run_query(db, f"SELECT * FROM {quote(info.name)}")
