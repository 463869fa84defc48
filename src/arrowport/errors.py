"""Every failure a client can be told about, with one stable code shared by HTTP and Flight.

::

    ArrowportError                      500 internal_error                      INTERNAL
    ├── BadRequest                      400                                     INVALID_ARGUMENT
    │   ├── InvalidJSON                     invalid_json
    │   ├── InvalidBase64                   invalid_base64
    │   ├── InvalidIPC                      invalid_ipc
    │   ├── TruncatedStream                 truncated_stream
    │   ├── InvalidCompression              invalid_compression
    │   ├── SchemaMismatch                  schema_mismatch
    │   ├── InvalidName                     invalid_name
    │   └── QueryError                      query_error
    ├── Unauthenticated                 401 unauthenticated (WWW-Authenticate)  UNAUTHENTICATED
    ├── Forbidden                       403 forbidden                           PERMISSION_DENIED
    │   ├── ReadOnly                        read_only
    │   ├── StreamLocked                    stream_locked
    │   └── ForbiddenOrigin                 forbidden_origin, forbidden_host
    ├── NotFound                        404 unknown_stream, unknown_table       NOT_FOUND
    │                                       unknown_handle
    ├── SchemaConflict                  409 schema_conflict, duplicate_keys     INVALID_ARGUMENT
    │   └── TableExists                     table_exists                        ALREADY_EXISTS
    ├── TransactionAborted              409 transaction_aborted                 FAILED_PRECONDITION
    ├── WriteConflict                   409 write_conflict                      ABORTED
    │   ├── ConstraintViolation             constraint_violation                INVALID_ARGUMENT
    │   ├── IdempotencyConflict             idempotency_conflict                ALREADY_EXISTS
    │   └── SequenceGap                     sequence_gap                        FAILED_PRECONDITION
    ├── RequestTimeout                  408 request_timeout, query_timeout      DEADLINE_EXCEEDED
    ├── PayloadTooLarge                 413 payload_too_large                   RESOURCE_EXHAUSTED
    │   └──                                 too_many_columns, result_too_large
    ├── UnsupportedMediaType            415 unsupported_media_type              INVALID_ARGUMENT
    ├── HeaderTooLarge                  431 header_too_large (HTTP only)        RESOURCE_EXHAUSTED
    ├── InvalidOptions                  422 invalid_options, unsupported_type,  INVALID_ARGUMENT
    │                                       invalid_value
    ├── NotImplementedFeature           501 not_implemented                     UNIMPLEMENTED
    ├── Overloaded                      503 overloaded, shutting_down,          UNAVAILABLE
    │   │                                   storage_unavailable (with Retry-After)
    │   └── ClientQuotaExceeded             overloaded (a client's own quota)       RESOURCE_EXHAUSTED
    └── StorageError                    503 storage_error                       UNAVAILABLE
        ├── OutOfMemory                     out_of_memory                       RESOURCE_EXHAUSTED
        └── InsufficientStorage         507 insufficient_storage                RESOURCE_EXHAUSTED

The HTTP layer answers with ``status``; the Flight layer with the gRPC status ``grpc_code``
(its canonical name, lower case), the message starting with ``code``.
"""

from __future__ import annotations

import errno
from typing import Any, ClassVar, Literal

GrpcCode = Literal[
    "invalid_argument",
    "not_found",
    "already_exists",
    "permission_denied",
    "unauthenticated",
    "resource_exhausted",
    "failed_precondition",
    "aborted",
    "deadline_exceeded",
    "unavailable",
    "unimplemented",
    "internal",
]


# How much of a client's value an error message quotes (a name, a key): messages stay short.
SHOWN_CHARS = 100


def shown(value: str) -> str:
    """``value`` quoted for an error message: its ``repr``, cut after a few words if long."""
    if len(value) <= SHOWN_CHARS:
        return repr(value)
    return f"{value[:SHOWN_CHARS]!r}... ({len(value)} characters)"


class ArrowportError(Exception):
    """Base of all client-visible failures."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    grpc_code: ClassVar[GrpcCode] = "internal"
    # The server's own trouble (its database or disk failing), not the request's: the log
    # line of its refusal is a warning, seen where the access lines are not.
    server_fault: ClassVar[bool] = False

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
    grpc_code: ClassVar[GrpcCode] = "invalid_argument"


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
    grpc_code: ClassVar[GrpcCode] = "unauthenticated"


class Forbidden(ArrowportError):
    """Valid credentials without the scope (or stream) the request needs."""

    status = 403
    code = "forbidden"
    grpc_code: ClassVar[GrpcCode] = "permission_denied"


class ReadOnly(Forbidden):
    code = "read_only"


class StreamLocked(Forbidden):
    """A request option differs from a ``locked`` stream's configuration."""

    code = "stream_locked"


class ForbiddenOrigin(Forbidden):
    """A browser request from a foreign origin, or for a host name this server does not serve
    (cross-site requests and DNS rebinding)."""

    code = "forbidden_origin"


class ForbiddenHost(ForbiddenOrigin):
    code = "forbidden_host"


class NotFound(ArrowportError):
    status = 404
    code = "not_found"
    grpc_code: ClassVar[GrpcCode] = "not_found"


class UnknownStream(NotFound):
    code = "unknown_stream"


class UnknownTable(NotFound):
    code = "unknown_table"


class UnknownHandle(NotFound):
    """A Flight SQL prepared statement, transaction or ticket this server does not hold."""

    code = "unknown_handle"


class TransactionAborted(ArrowportError):
    """A query in a held (Flight SQL) transaction that a failed query or its expiry ended;
    the client rolls it back to start another."""

    status = 409
    code = "transaction_aborted"
    grpc_code: ClassVar[GrpcCode] = "failed_precondition"


class SchemaConflict(ArrowportError):
    status = 409
    code = "schema_conflict"
    grpc_code: ClassVar[GrpcCode] = "invalid_argument"


class TableExists(SchemaConflict):
    code = "table_exists"
    grpc_code: ClassVar[GrpcCode] = "already_exists"


class DuplicateKeys(SchemaConflict):
    """An upsert batch names the same key twice."""

    code = "duplicate_keys"


class WriteConflict(ArrowportError):
    """A concurrent transaction changed the same table (e.g. a replace during an append)."""

    status = 409
    code = "write_conflict"
    grpc_code: ClassVar[GrpcCode] = "aborted"


class ConstraintViolation(WriteConflict):
    code = "constraint_violation"
    grpc_code: ClassVar[GrpcCode] = "invalid_argument"


class IdempotencyConflict(WriteConflict):
    code = "idempotency_conflict"
    grpc_code: ClassVar[GrpcCode] = "already_exists"


class SequenceGap(WriteConflict):
    code = "sequence_gap"
    grpc_code: ClassVar[GrpcCode] = "failed_precondition"


class RequestTimeout(ArrowportError):
    """The client sent its body too slowly."""

    status = 408
    code = "request_timeout"
    grpc_code: ClassVar[GrpcCode] = "deadline_exceeded"


class QueryTimeout(RequestTimeout):
    code = "query_timeout"


class PayloadTooLarge(ArrowportError):
    status = 413
    code = "payload_too_large"
    grpc_code: ClassVar[GrpcCode] = "resource_exhausted"


class TooManyColumns(PayloadTooLarge):
    code = "too_many_columns"


class ResultTooLarge(PayloadTooLarge):
    """A query's answer would exceed ``limits.max_result_bytes``."""

    code = "result_too_large"


class HeaderTooLarge(ArrowportError):
    """A request head (request line and headers) larger than ``api.max_header_bytes``."""

    status = 431
    code = "header_too_large"
    grpc_code: ClassVar[GrpcCode] = "resource_exhausted"


class UnsupportedMediaType(ArrowportError):
    status = 415
    code = "unsupported_media_type"
    grpc_code: ClassVar[GrpcCode] = "invalid_argument"


class InvalidOptions(ArrowportError):
    status = 422
    code = "invalid_options"
    grpc_code: ClassVar[GrpcCode] = "invalid_argument"


class UnsupportedType(InvalidOptions):
    code = "unsupported_type"


class InvalidValue(InvalidOptions):
    code = "invalid_value"


class NotImplementedFeature(ArrowportError):
    """A well-formed request for something this server does not do."""

    status = 501
    code = "not_implemented"
    grpc_code: ClassVar[GrpcCode] = "unimplemented"


class Overloaded(ArrowportError):
    status = 503
    code = "overloaded"
    grpc_code: ClassVar[GrpcCode] = "unavailable"

    def __init__(self, message: str, retry_after: int = 1, **details: Any) -> None:
        super().__init__(message, **details)
        self.retry_after = retry_after


class ShuttingDown(Overloaded):
    code = "shutting_down"


class ClientQuotaExceeded(Overloaded):
    """A client holds as much of one kind of server-side state as it may (Flight SQL
    transactions, prepared statements). Over Flight RESOURCE_EXHAUSTED, gRPC's code for a
    per-client quota, not UNAVAILABLE: retrying helps only once that client has closed some."""

    grpc_code: ClassVar[GrpcCode] = "resource_exhausted"


class StorageUnavailable(Overloaded):
    """The lake's catalog or object store cannot be reached now; nothing was written."""

    code = "storage_unavailable"


class StorageError(ArrowportError):
    status = 503
    code = "storage_error"
    grpc_code: ClassVar[GrpcCode] = "unavailable"
    server_fault = True


class OutOfMemory(StorageError):
    """The server's memory passed its bound (``limits.max_server_memory_bytes``) while a query
    ran, and the query was stopped."""

    code = "out_of_memory"
    grpc_code: ClassVar[GrpcCode] = "resource_exhausted"


class InsufficientStorage(StorageError):
    status = 507
    code = "insufficient_storage"
    grpc_code: ClassVar[GrpcCode] = "resource_exhausted"


_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_FULL_MESSAGES = ("no space left", "disk full", "disk quota exceeded", "file too large")


def is_disk_full(exc: BaseException) -> bool:
    """Whether a write failed for lack of room (a full disk, a quota, a file-size limit).
    DuckDB's and Arrow's I/O errors carry no errno, only the system's message."""
    text = str(exc).lower()
    return getattr(exc, "errno", None) in _FULL_ERRNOS or any(m in text for m in _FULL_MESSAGES)
