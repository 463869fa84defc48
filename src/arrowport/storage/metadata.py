"""What a database client asks about the catalog: its name, its schemas, its tables with their
Arrow schemas, and what a query takes and returns (Flight SQL's metadata commands).

Only the database's own catalog is shown, with its ``main`` schema and the schemas tables were
written to (``analytics`` for ``analytics.events``): Arrowport's internal ``_arrowport`` schema,
temporary objects and attached databases never are. Filter patterns have
SQL ``LIKE`` semantics (``%`` any run of characters, ``_`` one character, ``\\`` escapes either).
Every listing reads one consistent snapshot.

Example::

    tables(db, schema_pattern="main", table_pattern="ev%", with_schemas=True)
    # [TableEntry(catalog='db', schema='main', name='events', arrow_schema=...)]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import duckdb
import pyarrow as pa

from arrowport.storage.identifiers import (
    DEFAULT_SCHEMA,
    INTERNAL_SCHEMA,
    USER_SCHEMAS_SQL,
    quote,
)
from arrowport.storage.query import _check, _failed, _snapshot, query_schema

if TYPE_CHECKING:
    from arrowport.storage.engine import Engine as Database

TABLE_TYPE = "TABLE"


@dataclass(frozen=True)
class TableEntry:
    catalog: str
    schema: str
    name: str
    arrow_schema: pa.Schema | None = None


@dataclass(frozen=True)
class QueryShape:
    """A query's parameters (by name: ``1``, ``2``... for positional ones) and, when it takes
    none, the schema of its answer (planned, not run)."""

    parameters: tuple[str, ...]
    schema: pa.Schema | None


def catalog_name(db: Database) -> str:
    """The name clients see the database's catalog under (``db`` for ``db.duckdb``)."""
    with db.cursor() as cur:
        row = cur.execute("SELECT current_database()").fetchone()
    return str(row[0]) if row else ""


def db_schemas(db: Database, pattern: str | None) -> list[TableEntry]:
    """The schemas (as entries without a table name) whose name matches ``pattern``."""
    with _snapshot(db) as cur:
        row = cur.execute("SELECT current_database()").fetchone()
        catalog = str(row[0]) if row else ""
        sql = (
            "SELECT schema_name FROM duckdb_schemas() WHERE database_name = current_database() "
            f"AND (schema_name = '{DEFAULT_SCHEMA}' OR NOT internal) "
            f"AND schema_name <> '{INTERNAL_SCHEMA}'"
        )
        params: list[str] = []
        if pattern is not None:
            sql += " AND schema_name LIKE ? ESCAPE '\\'"
            params.append(pattern)
        rows = cur.execute(sql + " ORDER BY schema_name", params).fetchall()
    return [TableEntry(catalog, schema, "") for (schema,) in rows]


def tables(
    db: Database,
    schema_pattern: str | None = None,
    table_pattern: str | None = None,
    with_schemas: bool = False,
) -> list[TableEntry]:
    """The tables whose schema and name match the patterns, by name; with ``with_schemas``, each
    with the Arrow schema a ``SELECT *`` of it answers with."""
    with _snapshot(db) as cur:
        row = cur.execute("SELECT current_database()").fetchone()
        catalog = str(row[0]) if row else ""
        sql = f"SELECT schema_name, table_name FROM duckdb_tables() WHERE {USER_SCHEMAS_SQL}"
        params: list[str] = []
        for column, pattern in (("schema_name", schema_pattern), ("table_name", table_pattern)):
            if pattern is not None:
                sql += f" AND {column} LIKE ? ESCAPE '\\'"
                params.append(pattern)
        rows = cur.execute(sql + " ORDER BY schema_name, table_name", params).fetchall()
        found = []
        for schema, name in rows:
            arrow_schema = None
            if with_schemas:
                relation = cur.sql(f"SELECT * FROM {quote(schema)}.{quote(name)}")
                arrow_schema = relation.limit(0).to_arrow_table().schema
            found.append(TableEntry(catalog, schema, name, arrow_schema))
    return found


def _position(name: str) -> tuple[int, str]:
    """Positional parameters (``?``, ``$1``: named ``1``, ``2``...) in order, then named ones."""
    return (int(name), "") if name.isdigit() else (2**31, name)


def describe_query(db: Database, sql: str) -> QueryShape:
    """What ``sql`` takes and returns, checked by the read guard like any query (403
    ``read_only`` for anything but a read-only SELECT, 400 ``query_error`` for bad SQL)."""
    with _snapshot(db) as cur:
        _check(db, cur, sql)
        try:
            statements = cur.extract_statements(sql)
        except duckdb.Error as exc:
            raise _failed(exc, db) from None
    names: set[str] = set()
    for statement in statements:
        names |= set(statement.named_parameters)
    ordered = tuple(sorted(names, key=_position))
    if ordered:
        return QueryShape(ordered, None)
    return QueryShape((), query_schema(db, sql))
