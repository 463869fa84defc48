"""What a Flight client asks for: put descriptors, read tickets and their JSON forms.

A put names its stream by descriptor path (``FlightDescriptor.for_path("events")``) or by a JSON
command::

    {"stream_name": "events", "target_table": "events_raw", "mode": "append", "chunk_size": 65536,
     "key_columns": ["id"], "schema_policy": "evolve", "duplicate_keys": "last_wins",
     "dry_run": false, "idempotency_key": "...", "producer_id": "...", "sequence": 7}

A read ticket (or a ``get_flight_info`` / ``get_schema`` command) names a table, as plain text or
``{"table": "t"}``, or carries a read-only query: ``{"sql": "SELECT ...", "params": [...]}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pyarrow.flight as flight

from arrowport.errors import InvalidJSON, InvalidName, InvalidOptions
from arrowport.ingest.service import DeliveryRequest

_PUT_KEYS = (
    "stream_name",
    "target_table",
    "table",
    "mode",
    "chunk_size",
    "key_columns",
    "schema_policy",
    "duplicate_keys",
    "dry_run",
    "idempotency_key",
    "producer_id",
    "sequence",
)


@dataclass(frozen=True)
class PutRequest:
    stream: str
    table: str | None = None
    mode: str | None = None
    chunk_size: int | None = None
    key_columns: list[str] | None = None
    schema_policy: str | None = None
    duplicate_keys: str | None = None
    dry_run: bool = False
    delivery: DeliveryRequest = field(default_factory=DeliveryRequest)


@dataclass(frozen=True)
class ReadRequest:
    """Either a table or a read-only SQL query with its parameters."""

    table: str | None = None
    sql: str | None = None
    params: list[Any] | None = None

    def ticket(self) -> flight.Ticket:
        if self.table is not None:
            return flight.Ticket(json.dumps({"table": self.table}).encode())
        body: dict[str, Any] = {"sql": self.sql}
        if self.params:
            body["params"] = self.params
        return flight.Ticket(json.dumps(body).encode())


def _text(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidName(f"{what} is not UTF-8 text") from None


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        document = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidJSON(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise InvalidOptions(f"{what} must be a JSON object, not {type(document).__name__}")
    return document


_KIND_NAMES = {int: "number", str: "string", bool: "true or false", list: "list of strings"}


def _optional(document: dict[str, Any], key: str, kind: type, what: str) -> Any:
    value = document.get(key)
    if value is None:
        return None
    # bool is an int in Python; a JSON true is not a row count.
    wrong = not isinstance(value, kind) or (kind is int and isinstance(value, bool))
    if kind is list and not wrong:
        wrong = not all(isinstance(item, str) for item in value)
    if wrong:
        raise InvalidOptions(f"{what}: {key} must be a {_KIND_NAMES[kind]}", field=key)
    return value


def put_request(descriptor: flight.FlightDescriptor) -> PutRequest:
    """The stream and options a ``do_put`` descriptor names."""
    if descriptor.descriptor_type == flight.DescriptorType.PATH:
        path = descriptor.path or []
        if len(path) != 1:
            raise InvalidOptions(
                f"a put descriptor path has exactly one element, the stream name (got {len(path)})"
            )
        stream = _text(path[0], "the stream name")
        if not stream:
            raise InvalidOptions("the stream name is empty")
        return PutRequest(stream)
    what = "the put command"
    document = _json_object(descriptor.command, what)
    unknown = sorted(set(document) - set(_PUT_KEYS))
    if unknown:
        raise InvalidOptions(
            f"{what}: unknown keys {', '.join(unknown)}; use {', '.join(_PUT_KEYS)}",
            field=unknown[0],
        )
    stream = _optional(document, "stream_name", str, what)
    if not stream:
        raise InvalidOptions(f"{what}: stream_name is required", field="stream_name")
    table = _optional(document, "target_table", str, what)
    alias = _optional(document, "table", str, what)
    if table is not None and alias is not None and table != alias:
        raise InvalidOptions(f"{what}: target_table and table disagree", field="table")
    chunk_size = _optional(document, "chunk_size", int, what)
    if chunk_size is not None and chunk_size < 1:
        raise InvalidOptions(f"{what}: chunk_size must be a positive number of rows")
    delivery = DeliveryRequest(
        idempotency_key=_optional(document, "idempotency_key", str, what),
        producer_id=_optional(document, "producer_id", str, what),
        sequence=_optional(document, "sequence", int, what),
    )
    return PutRequest(
        stream,
        table=table or alias,
        mode=_optional(document, "mode", str, what),
        chunk_size=chunk_size,
        key_columns=_optional(document, "key_columns", list, what),
        schema_policy=_optional(document, "schema_policy", str, what),
        duplicate_keys=_optional(document, "duplicate_keys", str, what),
        dry_run=bool(_optional(document, "dry_run", bool, what)),
        delivery=delivery,
    )


def read_request(raw: bytes, what: str = "the ticket") -> ReadRequest:
    """A ticket (or descriptor command): a table name, ``{"table"}`` or ``{"sql", "params"}``."""
    if not raw.lstrip().startswith(b"{"):
        name = _text(raw, what)
        if not name:
            raise InvalidOptions(f'{what} is empty: name a table or send {{"sql": ...}}')
        return ReadRequest(table=name)
    document = _json_object(raw, what)
    unknown = sorted(set(document) - {"table", "sql", "params"})
    if unknown:
        raise InvalidOptions(
            f"{what}: unknown keys {', '.join(unknown)}; use table, or sql and params",
            field=unknown[0],
        )
    table = _optional(document, "table", str, what)
    sql = _optional(document, "sql", str, what)
    if (table is None) == (sql is None):
        raise InvalidOptions(f'{what} needs exactly one of "table" or "sql"')
    params = document.get("params")
    if params is not None and not isinstance(params, list):
        raise InvalidOptions(f"{what}: params must be a JSON array", field="params")
    if table is not None:
        if params:
            raise InvalidOptions(f"{what}: params go with sql, not with table", field="params")
        return ReadRequest(table=table)
    return ReadRequest(sql=sql, params=params)


def descriptor_request(descriptor: flight.FlightDescriptor) -> ReadRequest:
    """What ``get_flight_info`` / ``get_schema`` describe: path ``[table]`` or a command."""
    if descriptor.descriptor_type == flight.DescriptorType.PATH:
        path = descriptor.path or []
        if len(path) != 1:
            raise InvalidOptions(
                f"a descriptor path has exactly one element, the table name (got {len(path)})"
            )
        return ReadRequest(table=_text(path[0], "the table name"))
    return read_request(descriptor.command, "the descriptor command")


@dataclass(frozen=True)
class ProducerRequest:
    stream: str
    producer_id: str


def producer_request(body: bytes) -> ProducerRequest:
    """The body of the ``producer_offset`` action: ``{"stream": ..., "producer_id": ...}``."""
    what = "the producer_offset action body"
    document = _json_object(body, what)
    stream = _optional(document, "stream", str, what)
    producer_id = _optional(document, "producer_id", str, what)
    if not stream or not producer_id:
        raise InvalidOptions(f'{what} needs "stream" and "producer_id"')
    return ProducerRequest(stream, producer_id)
