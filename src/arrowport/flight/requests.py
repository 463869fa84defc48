"""What a Flight client asks for: put descriptors, read tickets and their JSON forms.

A put names its stream by descriptor path (``FlightDescriptor.for_path("events")``) or by a JSON
command::

    {"stream_name": "events", "target_table": "events_raw", "mode": "append", "chunk_size": 65536,
     "key_columns": ["id"], "schema_policy": "evolve", "duplicate_keys": "last_wins",
     "dry_run": false, "idempotency_key": "...", "producer_id": "...", "sequence": 7}

Its options come from the command only: an ``arrowport.*`` call header (how Flight SQL's bulk
ingestion takes them) is refused rather than ignored.

A read ticket (or a ``get_flight_info`` / ``get_schema`` command) names a table, as plain text or
``{"table": "t"}``, or carries a read-only query: ``{"sql": "SELECT ...", "params": [...]}``. It is
held to ``limits.max_query_body_bytes``, as a ``POST /query`` body is (RESOURCE_EXHAUSTED
``payload_too_large`` beyond).

JSON is read as HTTP reads it: a document that repeats a key, at any depth, is refused
(``invalid_options``) rather than taking one of the values.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from arrowport.errors import (
    SHOWN_CHARS,
    InvalidJSON,
    InvalidName,
    InvalidOptions,
    PayloadTooLarge,
    shown,
)
from arrowport.flight.protocol import flight_pb2
from arrowport.flight.sql.ingest import PREFIX as OPTION_HEADER_PREFIX
from arrowport.ingest import seed_json
from arrowport.options import IngestRequest, checked_json
from arrowport.storage.query_inputs import check_parameters, check_sql

PATH = flight_pb2.FlightDescriptor.PATH
CMD = flight_pb2.FlightDescriptor.CMD
# How much of a value a client sent an error message quotes back.


@dataclass(frozen=True)
class ReadRequest:
    """Either a table or a read-only SQL query with its parameters."""

    table: str | None = None
    sql: str | None = None
    params: list[Any] | None = None
    # The JSON a query was read from: its ticket as the client wrote it, which is within the
    # limit (written again, its escapes could take more bytes).
    raw: bytes | None = field(default=None, compare=False, repr=False)

    def ticket(self) -> bytes:
        if self.table is not None:
            return json.dumps({"table": self.table}).encode()
        if self.raw is not None:
            return self.raw
        body: dict[str, Any] = {"sql": self.sql}
        if self.params:
            body["params"] = self.params
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def _text(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidName(f"{what} is not UTF-8 text") from None


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        document = seed_json.loads(raw, what)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidJSON(f"{what} is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidJSON(f"{what} is not acceptable JSON: it nests too deeply") from None
    if not isinstance(document, dict):
        raise InvalidOptions(f"{what} must be a JSON object, not {type(document).__name__}")
    return document


def _optional(document: dict[str, Any], key: str, kind: type, what: str) -> Any:
    return checked_json(key, document.get(key), kind, what)


def put_request(descriptor: flight_pb2.FlightDescriptor) -> IngestRequest:
    """The stream and options a ``do_put`` descriptor names."""
    if descriptor.type == PATH:
        if len(descriptor.path) != 1:
            raise InvalidOptions(
                "a put descriptor path has exactly one element, the stream name "
                f"(got {len(descriptor.path)})"
            )
        stream = _text(descriptor.path[0], "the stream name")
        if not stream:
            raise InvalidOptions("the stream name is empty")
        return IngestRequest(stream)
    if descriptor.type != CMD:
        raise InvalidOptions("a put descriptor is a path or a command")
    what = "the put command"
    document = _json_object(descriptor.cmd, what)
    stream = checked_json("stream_name", document.pop("stream_name", None), str, what)
    if not stream:
        raise InvalidOptions(f"{what}: stream_name is required", field="stream_name")
    target = checked_json("target_table", document.pop("target_table", None), str, what)
    if target is not None:
        if document.get("table") not in (None, target):
            raise InvalidOptions(f"{what}: target_table and table disagree", field="table")
        document["table"] = target
    return IngestRequest.from_json(stream, document, what)


def check_put_headers(headers: Iterable[tuple[str, str]]) -> None:
    """Refuse a put option sent as a call header (``arrowport.idempotency_key``, as Flight SQL's
    ingestion takes them): a plain put reads its options from its command only, and an
    idempotency key or sequence it ignored would let a retry land twice."""
    for key, _ in headers:
        if key.startswith(OPTION_HEADER_PREFIX):
            raise InvalidOptions(
                f"the call header {shown(key)} is not read by a plain Flight put: send its "
                "options in its JSON command (FlightDescriptor.for_command), such as "
                '{"stream_name": "events", "idempotency_key": "k-1"}; call headers carry '
                "options for Flight SQL's bulk ingestion only",
                field=key[:SHOWN_CHARS],
            )


def read_request(raw: bytes, max_bytes: int, what: str = "the ticket") -> ReadRequest:
    """A ticket (or descriptor command): a table name, ``{"table"}`` or ``{"sql", "params"}``,
    of at most ``max_bytes`` (``limits.max_query_body_bytes``)."""
    if len(raw) > max_bytes:
        raise PayloadTooLarge(
            f"{what} is longer than {max_bytes} bytes (limits.max_query_body_bytes)",
            limit=max_bytes,
        )
    if not raw.lstrip().startswith(b"{"):
        name = _text(raw, what)
        if not name:
            raise InvalidOptions(f'{what} is empty: name a table or send {{"sql": ...}}')
        return ReadRequest(table=name)
    document = _json_object(raw, what)
    unknown = sorted(set(document) - {"table", "sql", "params"})
    if unknown:
        listed = ", ".join(map(shown, unknown[:5]))
        if len(unknown) > 5:
            listed += f" and {len(unknown) - 5} more"
        raise InvalidOptions(
            f"{what}: unknown keys {listed}; use table, or sql and params",
            field=unknown[0][:SHOWN_CHARS],
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
    assert sql is not None
    # JSON's escapes can carry what DuckDB cannot take (a lone surrogate, deep nesting).
    check_sql(sql)
    check_parameters(params)
    return ReadRequest(sql=sql, params=params, raw=raw)


def descriptor_request(descriptor: flight_pb2.FlightDescriptor, max_bytes: int) -> ReadRequest:
    """What ``get_flight_info`` / ``get_schema`` describe: path ``[table]`` or a command (of
    at most ``max_bytes``)."""
    if descriptor.type == PATH:
        if len(descriptor.path) != 1:
            raise InvalidOptions(
                "a descriptor path has exactly one element, the table name "
                f"(got {len(descriptor.path)})"
            )
        return ReadRequest(table=_text(descriptor.path[0], "the table name"))
    if descriptor.type != CMD:
        raise InvalidOptions("a descriptor is a path or a command")
    return read_request(descriptor.cmd, max_bytes, "the descriptor command")


@dataclass(frozen=True)
class ProducerRequest:
    stream: str
    producer_id: str


def producer_request(body: bytes) -> ProducerRequest:
    """The body of the ``producer_offset`` action: ``{"stream": ..., "producer_id": ...}``."""
    what = "the producer_offset action body"
    document = _json_object(body, what)
    unknown = sorted(set(document) - {"stream", "producer_id"})
    if unknown:
        raise InvalidOptions(f'{what} takes "stream" and "producer_id", not {shown(unknown[0])}')
    stream = _optional(document, "stream", str, what)
    producer_id = _optional(document, "producer_id", str, what)
    if not stream or not producer_id:
        raise InvalidOptions(f'{what} needs "stream" and "producer_id"')
    return ProducerRequest(stream, producer_id)
