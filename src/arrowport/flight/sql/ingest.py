"""Flight SQL bulk ingestion (``CommandStatementIngest``, what ``adbc_ingest`` sends) as an
ingest request with HTTP's options and semantics.

The ADBC modes arrive as a pair (if the table does not exist, if it exists):

=============== ======================= ==========================================
ADBC mode       (if_not_exist, if_exists) Arrowport
=============== ======================= ==========================================
create          (CREATE, FAIL)          mode ``create``: ALREADY_EXISTS if it exists
append          (FAIL, APPEND)          mode ``append``, never creating: NOT_FOUND
replace         (CREATE, REPLACE)       mode ``replace`` (atomic)
create_append   (CREATE, APPEND)        mode ``append`` (created if missing)
=============== ======================= ==========================================

(FAIL, REPLACE) replaces an existing table only. Delivery and write options come from the
command's ``options`` map and from the call's gRPC headers (which is how an ADBC driver can send
them: ``adbc.flight.sql.rpc.call_header.arrowport.idempotency_key``), under the keys
``arrowport.<option>``: ``stream`` (default: the table's name), ``idempotency_key``,
``producer_id``, ``sequence``, ``dry_run``, ``schema_policy``, ``chunk_size``, and ``mode``
(only ``upsert``, with ``key_columns`` and ``duplicate_keys``, in place of an append). Other
``arrowport.*`` keys are refused; keys outside it (a driver's own) are ignored.

The table lives in the database's own catalog, in the command's ``schema`` (``main`` when unset;
created on demand, named like a table: ``schema.table`` everywhere else); a temporary table,
another catalog, a reserved schema, or a transaction (ingestion is always a transaction of its
own) is INVALID_ARGUMENT.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from arrowport.auth import Principal
from arrowport.errors import InvalidOptions
from arrowport.flight.protocol import flight_sql_pb2 as sql
from arrowport.flight.sql.envelope import text
from arrowport.ingest.streams import IngestOptions, Streams
from arrowport.options import IngestRequest, WriteMode, canonical_table, check_table_name

PREFIX = "arrowport."
OPTIONS = (
    "stream",
    "idempotency_key",
    "producer_id",
    "sequence",
    "dry_run",
    "schema_policy",
    "chunk_size",
    "mode",
    "key_columns",
    "duplicate_keys",
)

_Definition = sql.CommandStatementIngest.TableDefinitionOptions
_CREATE = _Definition.TABLE_NOT_EXIST_OPTION_CREATE
_NOT_EXIST_FAIL = _Definition.TABLE_NOT_EXIST_OPTION_FAIL
_EXISTS_FAIL = _Definition.TABLE_EXISTS_OPTION_FAIL
_APPEND = _Definition.TABLE_EXISTS_OPTION_APPEND
_REPLACE = _Definition.TABLE_EXISTS_OPTION_REPLACE
_MODES: dict[int, WriteMode] = {_EXISTS_FAIL: "create", _APPEND: "append", _REPLACE: "replace"}


def ingest_options(
    cmd: sql.CommandStatementIngest,
    headers: Iterable[tuple[str, str]],
    catalog: str,
    streams: Streams,
    principal: Principal,
) -> IngestOptions:
    """The resolved options of an ingest (authorised like any put of its stream)."""
    table = text(cmd.table, "the table name")
    if not table:
        raise InvalidOptions("the ingest command names no table", field="table")
    _check_target(cmd, catalog)
    schema = text(cmd.schema, "the schema name") if cmd.HasField("schema") else ""
    if schema:
        table = canonical_table(check_table_name(f"{schema}.{table}"))
    else:
        check_table_name(table)  # here, not as the stream it names when none is given
    given = _options(cmd, headers)
    mode, create_missing = _mode(cmd.table_definition_options, given.pop("mode", None))
    stream = given.pop("stream", None) or table
    given |= {"table": table, "mode": mode}
    request = IngestRequest.from_text(stream, given.get)
    options = streams.resolve(request, principal)
    policy = dataclasses.replace(options.policy, create_missing=create_missing)
    return dataclasses.replace(options, policy=policy)


def _check_target(cmd: sql.CommandStatementIngest, catalog: str) -> None:
    if cmd.temporary:
        raise InvalidOptions("temporary tables are not supported", field="temporary")
    if cmd.HasField("transaction_id"):
        raise InvalidOptions(
            "bulk ingestion is always a transaction of its own and cannot join one "
            "(SqlInfo INGEST_TRANSACTIONS_SUPPORTED is false): send it without a transaction",
            field="transaction_id",
        )
    if cmd.HasField("catalog") and text(cmd.catalog, "the catalog name") not in ("", catalog):
        raise InvalidOptions(
            f"unknown catalog {text(cmd.catalog, 'the catalog name')!r}: this database's catalog "
            f"is {catalog!r} (or leave it unset)",
            field="catalog",
        )


def _options(cmd: sql.CommandStatementIngest, headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The ``arrowport.*`` options of the command's map and the call's headers."""
    given: dict[str, str] = {}
    pairs = [(text(o.key, "an option name"), text(o.value, "an option value")) for o in cmd.options]
    for key, value in [*pairs, *headers]:
        if not key.startswith(PREFIX):
            continue
        name = key[len(PREFIX) :]
        if name not in OPTIONS:
            raise InvalidOptions(
                f"unknown ingest option {key!r}; use "
                + ", ".join(PREFIX + option for option in OPTIONS),
                field=key,
            )
        if given.get(name, value) != value:
            raise InvalidOptions(f"ingest option {key!r} is given twice, differently", field=key)
        given[name] = value
    return given


def _mode(definition: _Definition, asked: str | None) -> tuple[WriteMode, bool]:
    """The write mode, and whether a missing table is created."""
    if_not_exist, if_exists = definition.if_not_exist, definition.if_exists
    if if_not_exist not in (_CREATE, _NOT_EXIST_FAIL) or if_exists not in _MODES:
        raise InvalidOptions(
            "the ingest command must say what to do if the table exists and if it does not "
            "(table_definition_options: if_not_exist, if_exists)",
            field="table_definition_options",
        )
    create_missing = if_not_exist == _CREATE
    if if_exists == _EXISTS_FAIL and not create_missing:
        raise InvalidOptions(
            "the ingest command fails both if the table exists and if it does not",
            field="table_definition_options",
        )
    mode = _MODES[if_exists]
    if asked is None or asked == "":
        return mode, create_missing
    if asked != "upsert":
        raise InvalidOptions(
            f"invalid arrowport.mode {asked!r}: the ingest mode says create, append or replace; "
            "arrowport.mode may only turn an append into an upsert",
            field="mode",
        )
    if mode != "append":
        raise InvalidOptions(
            "arrowport.mode upsert goes with the append modes (append, create_append)",
            field="mode",
        )
    return "upsert", create_missing
