"""Validating and quoting SQL identifiers, so no table or column name can inject SQL."""

from __future__ import annotations

import re

from arrowport.errors import InvalidName

# Used with fullmatch: ``$`` would also accept a trailing newline ("foo\n").
_TABLE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
# Internal bookkeeping lives in this schema; clients can neither write nor list it as a table.
INTERNAL_SCHEMA = "_arrowport"


def check_table_name(name: str) -> str:
    """Return ``name`` if it is a plain identifier (letters, digits, underscores; <= 63 chars)."""
    if not _TABLE_RE.fullmatch(name):
        raise InvalidName(
            f"invalid table name {name!r}: use letters, digits and underscores, "
            "starting with a letter or underscore, at most 63 characters",
            table=name,
        )
    return name


# Stream names label metrics and delivery records, so they are bounded too (dots and dashes
# allowed: a stream that names its table explicitly need not be an identifier itself).
_STREAM_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


def check_stream_name(name: str) -> str:
    if not _STREAM_RE.fullmatch(name):
        raise InvalidName(
            f"invalid stream name {name!r}: use letters, digits, '_', '.' and '-', "
            "at most 128 characters",
            stream=name,
        )
    return name


def check_column_name(name: str) -> str:
    """Column names may be any non-empty text without NUL; they are always quoted."""
    if not name or "\x00" in name:
        raise InvalidName(f"invalid column name {name!r}", column=name)
    return name


def quote(name: str) -> str:
    """Quote an identifier for DuckDB: ``a"b`` -> ``"a""b"``."""
    return '"' + name.replace('"', '""') + '"'
