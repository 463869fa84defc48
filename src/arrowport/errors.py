"""Every failure a client can be told about, with one stable code shared by HTTP and Flight.

::

    ArrowportError                      (500 internal_error)
    ├── BadRequest                      400
    │   ├── InvalidJSON                     invalid_json
    │   ├── InvalidBase64                   invalid_base64
    │   ├── InvalidIPC                      invalid_ipc
    │   ├── TruncatedStream                 truncated_stream
    │   ├── InvalidCompression              invalid_compression
    │   ├── SchemaMismatch                  schema_mismatch
    │   ├── InvalidName                     invalid_name
    │   └── QueryError                      query_error
    ├── Unauthenticated                 401 unauthenticated (with WWW-Authenticate: Bearer)
    ├── Forbidden                       403 forbidden (ReadOnly: read_only)
    ├── NotFound                        404 (UnknownStream, UnknownTable)
    ├── SchemaConflict                  409 schema_conflict, table_exists, duplicate_keys
    ├── WriteConflict                   409 write_conflict, constraint_violation,
    │                                       idempotency_conflict, sequence_gap
    ├── RequestTimeout                  408 request_timeout, query_timeout
    ├── PayloadTooLarge                 413 payload_too_large
    ├── UnsupportedMediaType            415 unsupported_media_type
    ├── InvalidOptions                  422 invalid_options, unsupported_type, invalid_value
    ├── Overloaded                      503 overloaded (with Retry-After; ShuttingDown:
    │                                       shutting_down)
    └── StorageError                    503 storage_error / 507 insufficient_storage

The HTTP layer maps ``status`` to the response; the Flight layer maps ``flight_status``.
"""

from __future__ import annotations

import errno
from typing import Any, ClassVar, Literal

FlightStatus = Literal[
    "invalid_argument",
    "not_found",
    "already_exists",
    "unauthenticated",
    "unauthorized",
    "unavailable",
    "internal",
]


class ArrowportError(Exception):
    """Base of all client-visible failures."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    flight_status: ClassVar[FlightStatus] = "internal"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = {k: v for k, v in details.items() if v is not None}

    def to_body(self, stream: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"status": "error"}
        if stream is not None:
            body["stream"] = stream
        body |= {"message": self.message, "code": self.code}
        body |= self.details
        return body

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"


class BadRequest(ArrowportError):
    status = 400
    code = "bad_request"
    flight_status: ClassVar[FlightStatus] = "invalid_argument"


class InvalidJSON(BadRequest):
    code = "invalid_json"


class InvalidBase64(BadRequest):
    code = "invalid_base64"


class InvalidIPC(BadRequest):
    code = "invalid_ipc"


class TruncatedStream(BadRequest):
    code = "truncated_stream"


class InvalidCompression(BadRequest):
    code = "invalid_compression"


class SchemaMismatch(BadRequest):
    code = "schema_mismatch"


class InvalidName(BadRequest):
    code = "invalid_name"


class QueryError(BadRequest):
    code = "query_error"


class Unauthenticated(ArrowportError):
    """No credentials, or credentials that match no configured token."""

    status = 401
    code = "unauthenticated"
    flight_status: ClassVar[FlightStatus] = "unauthenticated"


class Forbidden(ArrowportError):
    """Valid credentials without the scope (or stream) the request needs."""

    status = 403
    code = "forbidden"
    flight_status: ClassVar[FlightStatus] = "unauthorized"


class ReadOnly(Forbidden):
    code = "read_only"


class StreamLocked(Forbidden):
    """A request option differs from a ``locked`` stream's configuration."""

    code = "stream_locked"


class NotFound(ArrowportError):
    status = 404
    code = "not_found"
    flight_status: ClassVar[FlightStatus] = "not_found"


class UnknownStream(NotFound):
    code = "unknown_stream"


class UnknownTable(NotFound):
    code = "unknown_table"


class SchemaConflict(ArrowportError):
    status = 409
    code = "schema_conflict"
    flight_status: ClassVar[FlightStatus] = "invalid_argument"


class TableExists(SchemaConflict):
    code = "table_exists"
    flight_status: ClassVar[FlightStatus] = "already_exists"


class DuplicateKeys(SchemaConflict):
    """An upsert batch names the same key twice."""

    code = "duplicate_keys"


class WriteConflict(ArrowportError):
    """A concurrent transaction changed the same table (e.g. a replace during an append)."""

    status = 409
    code = "write_conflict"
    flight_status: ClassVar[FlightStatus] = "already_exists"


class ConstraintViolation(WriteConflict):
    code = "constraint_violation"
    flight_status: ClassVar[FlightStatus] = "invalid_argument"


class IdempotencyConflict(WriteConflict):
    code = "idempotency_conflict"
    flight_status: ClassVar[FlightStatus] = "already_exists"


class SequenceGap(WriteConflict):
    code = "sequence_gap"
    flight_status: ClassVar[FlightStatus] = "invalid_argument"


class RequestTimeout(ArrowportError):
    """The client sent its body too slowly."""

    status = 408
    code = "request_timeout"
    flight_status: ClassVar[FlightStatus] = "unavailable"


class QueryTimeout(RequestTimeout):
    code = "query_timeout"


class PayloadTooLarge(ArrowportError):
    status = 413
    code = "payload_too_large"
    flight_status: ClassVar[FlightStatus] = "invalid_argument"


class UnsupportedMediaType(ArrowportError):
    status = 415
    code = "unsupported_media_type"
    flight_status: ClassVar[FlightStatus] = "invalid_argument"


class InvalidOptions(ArrowportError):
    status = 422
    code = "invalid_options"
    flight_status: ClassVar[FlightStatus] = "invalid_argument"


class UnsupportedType(InvalidOptions):
    code = "unsupported_type"


class InvalidValue(InvalidOptions):
    code = "invalid_value"


class Overloaded(ArrowportError):
    status = 503
    code = "overloaded"
    flight_status: ClassVar[FlightStatus] = "unavailable"

    def __init__(self, message: str, retry_after: int = 1, **details: Any) -> None:
        super().__init__(message, **details)
        self.retry_after = retry_after


class ShuttingDown(Overloaded):
    code = "shutting_down"


class StorageError(ArrowportError):
    status = 503
    code = "storage_error"
    flight_status: ClassVar[FlightStatus] = "unavailable"


class InsufficientStorage(StorageError):
    status = 507
    code = "insufficient_storage"


_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_FULL_MESSAGES = ("no space left", "disk full", "disk quota exceeded", "file too large")


def is_disk_full(exc: BaseException) -> bool:
    """Whether a write failed for lack of room (a full disk, a quota, a file-size limit).
    DuckDB's and Arrow's I/O errors carry no errno, only the system's message."""
    text = str(exc).lower()
    return getattr(exc, "errno", None) in _FULL_ERRNOS or any(m in text for m in _FULL_MESSAGES)
