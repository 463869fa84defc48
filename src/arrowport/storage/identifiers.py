"""Validating and quoting SQL identifiers, so no table or column name can inject SQL."""

from __future__ import annotations

from arrowport.errors import InvalidName
from arrowport.options import DEFAULT_SCHEMA, check_stream_name, check_table_name, is_table_name

__all__ = [
    "DEFAULT_SCHEMA",
    "INTERNAL_SCHEMA",
    "USER_SCHEMAS_SQL",
    "check_column_name",
    "check_stream_name",
    "check_table_name",
    "quote",
    "quote_table",
    "split_table",
    "table_name",
]

# Internal bookkeeping lives in this schema; clients can neither write nor list it as a table.
INTERNAL_SCHEMA = "_arrowport"
# duckdb_tables() rows of user tables (of the current database; its internal schema left out).
USER_SCHEMAS_SQL = (
    "database_name = current_database() AND NOT internal AND NOT temporary "
    f"AND schema_name <> '{INTERNAL_SCHEMA}'"
)


def check_column_name(name: str) -> str:
    """Column names may be any non-empty text without NUL; they are always quoted."""
    if not name or "\x00" in name:
        raise InvalidName(f"invalid column name {name!r}", column=name)
    return name


def quote(name: str) -> str:
    """Quote an identifier for DuckDB: ``a"b`` -> ``"a""b"``."""
    return '"' + name.replace('"', '""') + '"'


def split_table(name: str) -> tuple[str, str]:
    """(schema, table) of a table's name: ``analytics.events`` is table ``events`` of schema
    ``analytics``; any other name (``events``, or one only SQL could create, ``"a b"``) is a
    table of the default schema."""
    if "." in name and is_table_name(name):
        schema, _, table = name.partition(".")
        return schema, table
    return DEFAULT_SCHEMA, name


def table_name(schema: str, table: str) -> str:
    """The name Arrowport shows for ``schema``'s ``table``: plain in the default schema."""
    return table if schema == DEFAULT_SCHEMA else f"{schema}.{table}"


def quote_table(name: str) -> str:
    """A table's name as SQL: ``events`` -> ``"events"``, ``analytics.events`` ->
    ``"analytics"."events"``."""
    schema, table = split_table(name)
    return quote(table) if schema == DEFAULT_SCHEMA else f"{quote(schema)}.{quote(table)}"
