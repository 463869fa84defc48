"""Flight SQL's catalog commands answered from the database's catalog: catalogs, schemas,
tables (with their Arrow schemas when asked), table types, and keys (Arrowport's tables have
none).

Each answer's schema is the exact one the protocol fixes (``utf8`` and ``binary``, with its
nullability): clients compare it field by field. The same :class:`pyarrow.Schema` is announced by
``GetFlightInfo`` and streamed by ``DoGet``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import pyarrow as pa

from arrowport.flight.protocol import flight_sql_pb2 as sql
from arrowport.flight.sql.envelope import text
from arrowport.storage import metadata
from arrowport.storage.engine import Engine

_STRING = pa.string()

CATALOGS = pa.schema([pa.field("catalog_name", _STRING, nullable=False)])
DB_SCHEMAS = pa.schema(
    [pa.field("catalog_name", _STRING), pa.field("db_schema_name", _STRING, nullable=False)]
)
TABLES = pa.schema(
    [
        pa.field("catalog_name", _STRING),
        pa.field("db_schema_name", _STRING),
        pa.field("table_name", _STRING, nullable=False),
        pa.field("table_type", _STRING, nullable=False),
    ]
)
TABLES_WITH_SCHEMA = TABLES.append(pa.field("table_schema", pa.binary(), nullable=False))
TABLE_TYPES = pa.schema([pa.field("table_type", _STRING, nullable=False)])
PRIMARY_KEYS = pa.schema(
    [
        pa.field("catalog_name", _STRING),
        pa.field("db_schema_name", _STRING),
        pa.field("table_name", _STRING, nullable=False),
        pa.field("column_name", _STRING, nullable=False),
        pa.field("key_sequence", pa.int32(), nullable=False),
        pa.field("key_name", _STRING),
    ]
)
FOREIGN_KEYS = pa.schema(
    [
        pa.field("pk_catalog_name", _STRING),
        pa.field("pk_db_schema_name", _STRING),
        pa.field("pk_table_name", _STRING, nullable=False),
        pa.field("pk_column_name", _STRING, nullable=False),
        pa.field("fk_catalog_name", _STRING),
        pa.field("fk_db_schema_name", _STRING),
        pa.field("fk_table_name", _STRING, nullable=False),
        pa.field("fk_column_name", _STRING, nullable=False),
        pa.field("key_sequence", pa.int32(), nullable=False),
        pa.field("fk_key_name", _STRING),
        pa.field("pk_key_name", _STRING),
        pa.field("update_rule", pa.uint8(), nullable=False),
        pa.field("delete_rule", pa.uint8(), nullable=False),
    ]
)
# The commands whose answer is always empty here, with its schema.
KEY_COMMANDS = {
    "CommandGetPrimaryKeys": PRIMARY_KEYS,
    "CommandGetExportedKeys": FOREIGN_KEYS,
    "CommandGetImportedKeys": FOREIGN_KEYS,
    "CommandGetCrossReference": FOREIGN_KEYS,
}


def _table(schema: pa.Schema, columns: Sequence[Sequence[object]]) -> pa.Table:
    arrays = [pa.array(values, field.type) for values, field in zip(columns, schema, strict=True)]
    return pa.Table.from_arrays(arrays, schema=schema)


Listing = sql.CommandGetDbSchemas | sql.CommandGetTables
L = TypeVar("L", sql.CommandGetDbSchemas, sql.CommandGetTables)


def _pattern(cmd: Listing, field: str) -> str | None:
    """A filter pattern of ``cmd`` (INVALID_ARGUMENT if it is no ``LIKE`` pattern)."""
    if not cmd.HasField(field):
        return None
    pattern = text(getattr(cmd, field), field)
    metadata.LikePattern(pattern, field)
    return pattern


def checked(cmd: L) -> L:
    """``cmd`` once its text fields are checked, so that a command ``DoGet`` would refuse is
    refused by ``GetFlightInfo`` already."""
    if cmd.HasField("catalog"):
        text(cmd.catalog, "catalog")
    _pattern(cmd, "db_schema_filter_pattern")
    if isinstance(cmd, sql.CommandGetTables):
        _pattern(cmd, "table_name_filter_pattern")
        for kind in cmd.table_types:
            text(kind, "table_types")
    return cmd


def _other_catalog(db: Engine, cmd: Listing) -> bool:
    """Whether the command asks for a catalog that is not this database's."""
    return cmd.HasField("catalog") and text(cmd.catalog, "catalog") != metadata.catalog_name(db)


def catalogs(db: Engine) -> pa.Table:
    return _table(CATALOGS, [[metadata.catalog_name(db)]])


def db_schemas(db: Engine, cmd: sql.CommandGetDbSchemas) -> pa.Table:
    found = (
        []
        if _other_catalog(db, cmd)
        else metadata.db_schemas(db, _pattern(cmd, "db_schema_filter_pattern"))
    )
    return _table(DB_SCHEMAS, [[e.catalog for e in found], [e.schema for e in found]])


def tables_schema(cmd: sql.CommandGetTables) -> pa.Schema:
    return TABLES_WITH_SCHEMA if cmd.include_schema else TABLES


def tables(db: Engine, cmd: sql.CommandGetTables) -> pa.Table:
    types = {text(t, "table_types").upper() for t in cmd.table_types}
    found: list[metadata.TableEntry] = []
    if not _other_catalog(db, cmd) and (not types or metadata.TABLE_TYPE in types):
        found = metadata.tables(
            db,
            _pattern(cmd, "db_schema_filter_pattern"),
            _pattern(cmd, "table_name_filter_pattern"),
            with_schemas=cmd.include_schema,
        )
    columns: list[list[object]] = [
        [e.catalog for e in found],
        [e.schema for e in found],
        [e.name for e in found],
        [metadata.TABLE_TYPE] * len(found),
    ]
    if cmd.include_schema:
        columns.append([_ipc(e.arrow_schema) for e in found])
    return _table(tables_schema(cmd), columns)


def _ipc(schema: pa.Schema | None) -> bytes:
    assert schema is not None
    return bytes(schema.serialize().to_pybytes())


def table_types() -> pa.Table:
    return _table(TABLE_TYPES, [[metadata.TABLE_TYPE]])


def no_keys(name: str) -> pa.Table:
    schema = KEY_COMMANDS[name]
    return _table(schema, [[] for _ in schema])


def batches(table: pa.Table) -> list[pa.RecordBatch]:
    """``table``'s batches; at least one, even without rows: some clients (the ADBC driver's
    ``GetTableSchema``) read the first batch and take "no batch" for a broken stream."""
    found: list[pa.RecordBatch] = table.to_batches()
    if found:
        return found
    columns = [column.combine_chunks() for column in table.columns]
    return [pa.RecordBatch.from_arrays(columns, schema=table.schema)]
