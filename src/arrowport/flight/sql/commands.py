"""Flight SQL's catalog commands as a client sends them (in a descriptor, or as the ticket of
their own answer): each decoded (a malformed one is INVALID_ARGUMENT), its scope checked, and
answered by :mod:`~arrowport.flight.sql.catalog` or :mod:`~arrowport.flight.sql.info`."""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa
from google.protobuf.message import Message as ProtoMessage

from arrowport.auth import Principal
from arrowport.flight.protocol import flight_sql_pb2 as sql
from arrowport.flight.sql import catalog, info
from arrowport.flight.sql.envelope import decode, unserved
from arrowport.storage.engine import Engine

# The key commands' messages: read (a malformed one is INVALID_ARGUMENT), though no table
# declares keys.
_KEY_MESSAGES: dict[str, type[ProtoMessage]] = {
    "CommandGetPrimaryKeys": sql.CommandGetPrimaryKeys,
    "CommandGetExportedKeys": sql.CommandGetExportedKeys,
    "CommandGetImportedKeys": sql.CommandGetImportedKeys,
    "CommandGetCrossReference": sql.CommandGetCrossReference,
}


def schema(name: str, body: bytes, principal: Principal) -> pa.Schema:
    """The schema of command ``name``'s answer (the command is checked, not run)."""
    what = "the command"
    _require_read(name, principal)
    if name == "CommandGetSqlInfo":
        decode(sql.CommandGetSqlInfo, body, what)
        return info.SCHEMA
    if name == "CommandGetCatalogs":
        decode(sql.CommandGetCatalogs, body, what)
        return catalog.CATALOGS
    if name == "CommandGetDbSchemas":
        catalog.checked(decode(sql.CommandGetDbSchemas, body, what))
        return catalog.DB_SCHEMAS
    if name == "CommandGetTables":
        return catalog.tables_schema(catalog.checked(decode(sql.CommandGetTables, body, what)))
    if name == "CommandGetTableTypes":
        decode(sql.CommandGetTableTypes, body, what)
        return catalog.TABLE_TYPES
    if name in catalog.KEY_COMMANDS:
        decode(_KEY_MESSAGES[name], body, what)
        return catalog.KEY_COMMANDS[name]
    raise unserved(name, what)


def answer(
    db: Callable[[], Engine],
    values: dict[int, str | bool | int],
    name: str,
    body: bytes,
    principal: Principal,
) -> pa.Table:
    """The answer to command ``name`` (its ticket is the command itself), from the database
    ``db`` gives and the server's SqlInfo ``values``."""
    what = "the ticket"
    _require_read(name, principal)
    if name == "CommandGetSqlInfo":
        return info.sql_info(values, decode(sql.CommandGetSqlInfo, body, what).info)
    if name == "CommandGetCatalogs":
        return catalog.catalogs(db())
    if name == "CommandGetDbSchemas":
        return catalog.db_schemas(db(), decode(sql.CommandGetDbSchemas, body, what))
    if name == "CommandGetTables":
        return catalog.tables(db(), decode(sql.CommandGetTables, body, what))
    if name == "CommandGetTableTypes":
        return catalog.table_types()
    if name in catalog.KEY_COMMANDS:
        decode(_KEY_MESSAGES[name], body, what)
        return catalog.no_keys(name)
    raise unserved(name, what)


def _require_read(command: str, principal: Principal) -> None:
    """Catalog commands need the ``read`` scope; what the server supports (SqlInfo, which
    clients ask as they connect) only a valid token."""
    if command != "CommandGetSqlInfo":
        principal.require("read")
