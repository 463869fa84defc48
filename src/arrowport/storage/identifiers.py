"""Validating and quoting SQL identifiers, so no table or column name can inject SQL."""

from __future__ import annotations

from arrowport.errors import InvalidName
from arrowport.options import check_stream_name, check_table_name

__all__ = ["INTERNAL_SCHEMA", "check_column_name", "check_stream_name", "check_table_name", "quote"]

# Internal bookkeeping lives in this schema; clients can neither write nor list it as a table.
INTERNAL_SCHEMA = "_arrowport"


def check_column_name(name: str) -> str:
    """Column names may be any non-empty text without NUL; they are always quoted."""
    if not name or "\x00" in name:
        raise InvalidName(f"invalid column name {name!r}", column=name)
    return name


def quote(name: str) -> str:
    """Quote an identifier for DuckDB: ``a"b`` -> ``"a""b"``."""
    return '"' + name.replace('"', '""') + '"'
