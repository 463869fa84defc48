"""How an incoming Arrow schema meets a DuckDB table: type mapping, compatibility, DDL.

Types come from DuckDB's own Arrow mapping (``DESCRIBE`` of an empty Arrow table), never from a
hand-written table, so a timestamp with a time zone stays ``TIMESTAMP WITH TIME ZONE``, a map stays
a ``MAP`` and so on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import duckdb
import pyarrow as pa

from arrowport.errors import InvalidName, SchemaConflict, UnsupportedType
from arrowport.storage.identifiers import check_column_name, quote


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    nullable: bool = True
    # True when the Arrow type is ``null``: such a column holds only NULLs and fits any type.
    all_null: bool = False

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "type": self.type, "nullable": self.nullable}


def _describe(cursor: duckdb.DuckDBPyConnection, schema: pa.Schema) -> list[tuple[str, str]]:
    empty = schema.empty_table()
    relation = cursor.from_arrow(empty)
    return list(zip(relation.columns, [str(t) for t in relation.types], strict=True))


def arrow_columns(cursor: duckdb.DuckDBPyConnection, schema: pa.Schema) -> list[Column]:
    """The DuckDB columns an Arrow schema maps to; 422 naming any column DuckDB cannot hold."""
    seen: dict[str, str] = {}
    for field in schema:
        check_column_name(field.name)
        folded = field.name.lower()
        if folded in seen:
            raise InvalidName(
                f"duplicate column name {field.name!r} (DuckDB column names are "
                f"case-insensitive; it clashes with {seen[folded]!r})",
                column=field.name,
            )
        seen[folded] = field.name
    try:
        described = _describe(cursor, schema)
    except (duckdb.Error, pa.ArrowException):
        bad = []
        for field in schema:
            try:
                _describe(cursor, pa.schema([field]))
            except (duckdb.Error, pa.ArrowException):
                bad.append(field)
        if not bad:
            raise
        names = ", ".join(f"{f.name!r} ({f.type})" for f in bad)
        raise UnsupportedType(
            f"DuckDB cannot store the Arrow type of column {names}",
            columns=[f.name for f in bad],
        ) from None
    return [
        Column(name, dtype, field.nullable, pa.types.is_null(field.type))
        for (name, dtype), field in zip(described, schema, strict=True)
    ]


def create_table_sql(table: str, columns: list[Column], replace: bool = False) -> str:
    verb = "CREATE OR REPLACE TABLE" if replace else "CREATE TABLE"
    parts = [
        f"{quote(c.name)} {c.type}{'' if c.nullable or c.all_null else ' NOT NULL'}"
        for c in columns
    ]
    return f"{verb} {quote(table)} ({', '.join(parts)})"


_SIGNED = ["TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT"]
_UNSIGNED = ["UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT"]
_TIMESTAMP_WIDENING = {("TIMESTAMP_S", "TIMESTAMP"), ("TIMESTAMP_MS", "TIMESTAMP")}
_DECIMAL_RE = re.compile(r"^DECIMAL\((\d+),(\d+)\)$")


def _decimal(dtype: str) -> tuple[int, int] | None:
    match = _DECIMAL_RE.match(dtype.replace(" ", ""))
    return (int(match[1]), int(match[2])) if match else None


def is_safe_cast(source: str, target: str) -> bool:
    """True when every value of DuckDB type ``source`` fits ``target`` without loss."""
    if source == target:
        return True
    if source in _SIGNED and target in _SIGNED:
        return _SIGNED.index(target) >= _SIGNED.index(source)
    if source in _UNSIGNED and target in _UNSIGNED:
        return _UNSIGNED.index(target) >= _UNSIGNED.index(source)
    if source in _UNSIGNED and target in _SIGNED:
        return _SIGNED.index(target) > _UNSIGNED.index(source)
    if source == "FLOAT" and target == "DOUBLE":
        return True
    if target == "DOUBLE" and source in (
        "TINYINT",
        "SMALLINT",
        "INTEGER",
        "UTINYINT",
        "USMALLINT",
        "UINTEGER",
    ):
        return True
    if (source, target) in _TIMESTAMP_WIDENING:
        return True
    src_dec, dst_dec = _decimal(source), _decimal(target)
    if src_dec and dst_dec:
        (sp, ss), (tp, ts) = src_dec, dst_dec
        return ts >= ss and tp - ts >= sp - ss
    return False


def check_compatible(table: str, incoming: list[Column], existing: list[Column]) -> None:
    """Raise 409 naming every conflicting column; inserts match columns by name."""
    by_name = {c.name.lower(): c for c in existing}
    unknown = [c.name for c in incoming if c.name.lower() not in by_name]
    mismatched: list[str] = []
    mismatched_names: list[str] = []
    for column in incoming:
        target = by_name.get(column.name.lower())
        if target is None or column.all_null:
            continue
        if not is_safe_cast(column.type, target.type):
            mismatched.append(f"{column.name} ({column.type} into {target.type})")
            mismatched_names.append(column.name)
    present = {c.name.lower() for c in incoming}
    missing = [c.name for c in existing if not c.nullable and c.name.lower() not in present]
    problems = []
    if unknown:
        problems.append("unknown columns: " + ", ".join(unknown))
    if mismatched:
        problems.append("incompatible types: " + ", ".join(mismatched))
    if missing:
        problems.append("missing NOT NULL columns: " + ", ".join(missing))
    if problems:
        raise SchemaConflict(
            f"batch does not fit table {table!r}: " + "; ".join(problems),
            table=table,
            columns=unknown + mismatched_names + missing,
        )
