"""Flight SQL's wrapping: every command, ticket and action body is a ``google.protobuf.Any``
whose type URL names the message (``type.googleapis.com/arrow.flight.protocol.sql.<Message>``).

A Flight descriptor command or ticket is Flight SQL's when it is shaped like an ``Any`` (its
first byte is the tag of ``type_url``, 0x0a) and is not a JSON object: Arrowport's own Flight
requests are a JSON object (which may start with white space, a newline, 0x0a, included) or a
plain table name, which never starts with a newline. An ``Any`` of Flight SQL's is never taken
for JSON: its second byte is the length of its type URL (over 40), never white space, and the URL
starts with ``type``, not ``{``. Anything that claims to be an ``Any`` but is not a valid one,
names no Flight SQL message, or carries one of the protocol's messages where it does not belong,
is INVALID_ARGUMENT; a Flight SQL message this server does not serve (or does not know: a later
version's) is UNIMPLEMENTED, so clients can fall back to another way.

Example::

    raw = pack(flight_sql_pb2.CommandGetCatalogs())
    name, body = unpack(raw, "the command")      # ("CommandGetCatalogs", b"")
"""

from __future__ import annotations

import re
from typing import TypeVar

import pyarrow as pa
from google.protobuf.message import DecodeError
from google.protobuf.message import Message as ProtoMessage

from arrowport.errors import InvalidOptions, NotImplementedFeature
from arrowport.flight.protocol import flight_pb2, flight_sql_pb2

PACKAGE = "arrow.flight.protocol.sql."
TYPE_URL_PREFIX = "type.googleapis.com/"
# The first byte of a serialized Any: field 1 (type_url), length-delimited.
_ANY_TAG = b"\x0a"
# A JSON object, as Arrowport's own requests are read (white space as ``bytes.lstrip`` takes it).
_JSON_OBJECT = re.compile(rb"\s*\{")

# Messages of the protocol that this server does not serve (UNIMPLEMENTED).
UNSERVED = frozenset(
    {
        "CommandGetXdbcTypeInfo",
        "CommandStatementSubstraitPlan",
        "ActionCreatePreparedSubstraitPlanRequest",
        "ActionBeginSavepointRequest",
        "ActionEndSavepointRequest",
        "ActionCancelQueryRequest",
    }
)

# Every other message of the protocol: known, but each belongs to one place.
PROTOCOL = UNSERVED | frozenset(
    {
        "CommandGetSqlInfo",
        "CommandGetCatalogs",
        "CommandGetDbSchemas",
        "CommandGetTables",
        "CommandGetTableTypes",
        "CommandGetPrimaryKeys",
        "CommandGetExportedKeys",
        "CommandGetImportedKeys",
        "CommandGetCrossReference",
        "CommandStatementQuery",
        "CommandPreparedStatementQuery",
        "CommandStatementUpdate",
        "CommandPreparedStatementUpdate",
        "CommandStatementIngest",
        "TicketStatementQuery",
        "ActionCreatePreparedStatementRequest",
        "ActionCreatePreparedStatementResult",
        "ActionClosePreparedStatementRequest",
        "ActionBeginTransactionRequest",
        "ActionBeginTransactionResult",
        "ActionEndTransactionRequest",
        "ActionBeginSavepointResult",
        "ActionCancelQueryResult",
        "DoPutUpdateResult",
        "DoPutPreparedStatementResult",
        "SubstraitPlan",
    }
)

M = TypeVar("M", bound=ProtoMessage)


def is_wrapped(raw: bytes) -> bool:
    """Whether a descriptor command or ticket is shaped like a Flight SQL ``Any`` (and is not
    a JSON object that starts with a newline)."""
    return raw[:1] == _ANY_TAG and _JSON_OBJECT.match(raw) is None


def pack(message: ProtoMessage) -> bytes:
    """``message`` in its ``Any`` (as Flight SQL sends commands, tickets and action bodies)."""
    return wrap(message.DESCRIPTOR.name, message.SerializeToString())


def wrap(name: str, body: bytes) -> bytes:
    """The ``Any`` of the Flight SQL message ``name`` whose serialized form is ``body``."""
    url = f"{TYPE_URL_PREFIX}{PACKAGE}{name}"
    return flight_sql_pb2.Envelope(type_url=url.encode(), value=body).SerializeToString()


def unpack(raw: bytes, what: str) -> tuple[str, bytes]:
    """The message name (``CommandGetTables``) and body an ``Any`` carries."""
    try:
        envelope = flight_sql_pb2.Envelope.FromString(raw)
    except (DecodeError, ValueError):
        raise InvalidOptions(f"{what} is not a valid google.protobuf.Any message") from None
    try:
        url = envelope.type_url.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidOptions(f"{what}: its type URL is not UTF-8 text") from None
    full_name = url.rsplit("/", 1)[-1]
    if not url or not full_name.startswith(PACKAGE):
        raise InvalidOptions(
            f"{what}: unknown type URL {url[:200]!r}; Flight SQL messages are "
            f"{TYPE_URL_PREFIX}{PACKAGE}<Message>"
        )
    return full_name[len(PACKAGE) :], envelope.value


def decode(kind: type[M], body: bytes, what: str) -> M:
    """The message ``kind`` from an ``Any``'s body (INVALID_ARGUMENT if it is not one)."""
    try:
        return kind.FromString(body)
    except (DecodeError, ValueError):
        raise InvalidOptions(
            f"{what} is not a valid {kind.DESCRIPTOR.name} protobuf message"
        ) from None


def unserved(name: str, what: str) -> NotImplementedFeature | InvalidOptions:
    """The error for a message this server does not serve or know (UNIMPLEMENTED), or one of
    the protocol's that does not belong where it was sent (INVALID_ARGUMENT)."""
    if name in UNSERVED:
        return NotImplementedFeature(f"{what}: {name} is not supported by this server")
    if name in PROTOCOL:
        return InvalidOptions(f"{what} cannot be a {name}")
    return NotImplementedFeature(f"{what}: unknown Flight SQL message {name[:100]!r}")


def text(raw: bytes, what: str) -> str:
    """A free-text field (SQL, names, patterns) as text (INVALID_ARGUMENT if not UTF-8)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidOptions(f"{what} is not UTF-8 text") from None


def endpoint_info(
    descriptor: flight_pb2.FlightDescriptor, schema: pa.Schema, ticket: bytes, rows: int
) -> flight_pb2.FlightInfo:
    """A ``FlightInfo`` whose one endpoint is ``ticket``, to be fetched from this same server
    (no locations)."""
    endpoint = flight_pb2.FlightEndpoint(ticket=flight_pb2.Ticket(ticket=ticket))
    return flight_pb2.FlightInfo(
        schema=ipc_schema(schema),
        flight_descriptor=descriptor,
        endpoint=[endpoint],
        total_records=rows,
        total_bytes=-1,
    )


def ipc_schema(schema: pa.Schema) -> bytes:
    """``schema`` as an IPC schema message, as Flight SQL's replies carry it."""
    return bytes(schema.serialize().to_pybytes())


def action_result(message: ProtoMessage) -> bytes:
    """An action's ``Result`` carrying ``message`` in an ``Any``."""
    return flight_pb2.Result(body=pack(message)).SerializeToString()
