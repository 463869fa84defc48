"""What a database client asks about the catalog: its name, its schemas, its tables with their
Arrow schemas, and what a query takes and returns (Flight SQL's metadata commands).

Only the database's own catalog is shown, with its ``main`` schema and the schemas tables were
written to (``analytics`` for ``analytics.events``): Arrowport's internal ``_arrowport`` schema,
temporary objects and attached databases never are. Filter patterns have
SQL ``LIKE`` semantics (``%`` any run of characters, ``_`` one character, ``\\`` escapes either,
or itself); one that ends with a lone ``\\`` escapes nothing and is refused (INVALID_ARGUMENT
``invalid_options``), as is one longer than 1,024 characters. They are matched here, not by
DuckDB's ``LIKE``, which backtracks: ``%a%a%a%a%a%a%a%ax`` against a name of 60 ``a`` ran for
minutes, holding its thread. Every listing reads one consistent snapshot.

Example::

    tables(db, schema_pattern="main", table_pattern="ev%", with_schemas=True)
    # [TableEntry(catalog='db', schema='main', name='events', arrow_schema=...)]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import duckdb
import pyarrow as pa

from arrowport.errors import InvalidOptions
from arrowport.storage.identifiers import (
    DEFAULT_SCHEMA,
    INTERNAL_SCHEMA,
    USER_SCHEMAS_SQL,
    quote,
)
from arrowport.storage.query import _check, _failed, _snapshot, schema_in
from arrowport.storage.result_types import relation_schema

if TYPE_CHECKING:
    from arrowport.storage.engine import Engine as Database

TABLE_TYPE = "TABLE"
# The field metadata key of a column's type as the database names it (Flight SQL's).
TYPE_NAME_KEY = b"ARROW:FLIGHT:SQL:TYPE_NAME"
# The longest filter pattern taken (a table name Arrowport writes is at most 127 characters).
MAX_PATTERN_CHARS = 1024

# Listings put the default schema first, then the others by name: the ADBC driver's
# GetTableSchema takes the first table of its name in any schema, and a query's ``events`` is
# ``main.events`` (by name, ``analytics.events`` came first).
_MAIN_FIRST = f"schema_name <> '{DEFAULT_SCHEMA}', schema_name"

# One stretch of a pattern between its ``%``: a character to match, or None for ``_``.
_Part = tuple[str | None, ...]


class LikePattern:
    """A SQL ``LIKE`` pattern with ``\\`` as its escape character, matched in time bounded by
    the name's length times the pattern's: each stretch between two ``%`` is found at its first
    place, which is never worse than a later one."""

    def __init__(self, pattern: str, what: str) -> None:
        if len(pattern) > MAX_PATTERN_CHARS:
            raise InvalidOptions(
                f"{what} is longer than {MAX_PATTERN_CHARS:,} characters ({len(pattern):,})"
            )
        parts: list[list[str | None]] = [[]]
        chars = iter(pattern)
        for char in chars:
            if char == "\\":
                escaped = next(chars, None)
                if escaped is None:
                    raise InvalidOptions(
                        f"{what} ends with the escape character \\, which escapes nothing: "
                        "a backslash itself is written \\\\"
                    )
                parts[-1].append(escaped)
            elif char == "%":
                parts.append([])
            else:
                parts[-1].append(None if char == "_" else char)
        self._parts = [tuple(part) for part in parts]

    def matches(self, name: str) -> bool:
        if len(self._parts) == 1:
            [whole] = self._parts
            return len(name) == len(whole) and _fits(name, 0, whole)
        head, *middle, tail = self._parts
        end = len(name) - len(tail)
        if end < len(head) or not (_fits(name, 0, head) and _fits(name, end, tail)):
            return False
        at = len(head)
        for part in middle:
            found = _find(name, part, at, end)
            if found < 0:
                return False
            at = found + len(part)
        return True


def _fits(name: str, at: int, part: _Part) -> bool:
    return all(char is None or name[at + i] == char for i, char in enumerate(part))


def _find(name: str, part: _Part, start: int, stop: int) -> int:
    """Where ``part`` first fits wholly inside ``name[start:stop]``; -1 if nowhere."""
    for at in range(start, stop - len(part) + 1):
        if _fits(name, at, part):
            return at
    return -1


def _matching(pattern: str | None, what: str) -> LikePattern | None:
    return None if pattern is None else LikePattern(pattern, what)


def _keeps(pattern: LikePattern | None, name: str) -> bool:
    return pattern is None or pattern.matches(name)


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
    matching = _matching(pattern, "the schema pattern")
    with _snapshot(db) as cur:
        row = cur.execute("SELECT current_database()").fetchone()
        catalog = str(row[0]) if row else ""
        sql = (
            "SELECT schema_name FROM duckdb_schemas() WHERE database_name = current_database() "
            f"AND (schema_name = '{DEFAULT_SCHEMA}' OR NOT internal) "
            f"AND schema_name <> '{INTERNAL_SCHEMA}'"
        )
        rows = cur.execute(sql + f" ORDER BY {_MAIN_FIRST}").fetchall()
    return [TableEntry(catalog, schema, "") for (schema,) in rows if _keeps(matching, schema)]


def tables(
    db: Database,
    schema_pattern: str | None = None,
    table_pattern: str | None = None,
    with_schemas: bool = False,
) -> list[TableEntry]:
    """The tables whose schema and name match the patterns, by name; with ``with_schemas``, each
    with the Arrow schema a ``SELECT *`` of it answers with."""
    schemas = _matching(schema_pattern, "the schema pattern")
    names = _matching(table_pattern, "the table pattern")
    with _snapshot(db) as cur:
        row = cur.execute("SELECT current_database()").fetchone()
        catalog = str(row[0]) if row else ""
        sql = f"SELECT schema_name, table_name FROM duckdb_tables() WHERE {USER_SCHEMAS_SQL}"
        rows = cur.execute(sql + f" ORDER BY {_MAIN_FIRST}, table_name").fetchall()
        found = []
        for schema, name in rows:
            if not (_keeps(schemas, schema) and _keeps(names, name)):
                continue
            arrow_schema = _declared_schema(cur, schema, name) if with_schemas else None
            found.append(TableEntry(catalog, schema, name, arrow_schema))
    return found


def _declared_schema(cur: duckdb.DuckDBPyConnection, schema: str, table: str) -> pa.Schema:
    """The Arrow schema of ``schema``'s ``table`` as declared: DuckDB's Arrow export marks
    every column nullable, so its ``NOT NULL`` columns are marked so from its catalog, and each
    field carries DuckDB's name for its type (Flight SQL's ``TYPE_NAME``, what ADBC reports as
    ``xdbc_type_name``: an Arrow ``string`` may be a ``UUID`` or a ``BIT``)."""
    exported = relation_schema(cur.sql(f"SELECT * FROM {quote(schema)}.{quote(table)}"))
    rows = cur.execute(
        "SELECT data_type, is_nullable FROM duckdb_columns() "
        "WHERE database_name = current_database() AND schema_name = ? AND table_name = ? "
        "ORDER BY column_index",
        [schema, table],
    ).fetchall()
    if len(rows) != len(exported):
        return exported
    fields = [
        field.with_nullable(field.nullable and nullable).with_metadata(
            {**(field.metadata or {}), TYPE_NAME_KEY: data_type.encode()}
        )
        for field, (data_type, nullable) in zip(exported, rows, strict=True)
    ]
    return pa.schema(fields, metadata=exported.metadata)


def _position(name: str) -> tuple[int, str]:
    """Positional parameters (``?``, ``$1``: named ``1``, ``2``...) in order, then named ones."""
    return (int(name), "") if name.isdigit() else (2**31, name)


def describe_query(db: Database, sql: str) -> QueryShape:
    """What ``sql`` takes and returns, checked by the read guard like any query (403
    ``read_only`` for anything but a read-only SELECT, 400 ``query_error`` for bad SQL)."""
    with _snapshot(db) as cur:
        return describe_query_in(db, cur, sql)


def describe_query_in(db: Database, cur: duckdb.DuckDBPyConnection, sql: str) -> QueryShape:
    """:func:`describe_query` on ``cur``, in the transaction it is in (a client's snapshot)."""
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
    return QueryShape((), schema_in(db, cur, sql))
