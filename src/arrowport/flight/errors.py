"""One place that turns failures into Flight errors, the way ``api/errors.py`` does for HTTP.

Every error a client sees has a message that starts with the stable code shared with HTTP
(``schema_conflict: batch does not fit table 't': ...``). ``extra_info`` stays empty on purpose:
gRPC sends it as ``grpc-status-details-bin``, which grpc-go (and so the Go-based ADBC Flight SQL
driver) decodes as a ``google.rpc.Status`` protobuf; anything else there makes those clients
replace our message with a generic "malformed" INTERNAL error.

pyarrow sends a Python exception that is not a ``FlightError`` to the client *with its traceback*,
so handlers only ever raise ``FlightError`` subclasses. Flight's own status codes have no
"invalid argument", "not found" or "already exists" (the Python exceptions that map to those gRPC
codes, ``ArrowInvalid`` and ``ArrowKeyError``, leak the traceback), so those three are sent as
``FlightServerError`` and told apart by the code at the start of the message.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow.flight as flight
import structlog

from arrowport.errors import ArrowportError, FlightStatus, Overloaded
from arrowport.metrics import Metrics

log = structlog.get_logger("arrowport.flight")

_ERROR_TYPES: dict[FlightStatus, type[flight.FlightError]] = {
    "invalid_argument": flight.FlightServerError,
    "not_found": flight.FlightServerError,
    "already_exists": flight.FlightServerError,
    "unauthenticated": flight.FlightUnauthenticatedError,
    "unauthorized": flight.FlightUnauthorizedError,
    "unavailable": flight.FlightUnavailableError,
    "internal": flight.FlightInternalError,
}


def to_flight_error(error: ArrowportError) -> flight.FlightError:
    """The Flight error a client receives for ``error``."""
    error_type = _ERROR_TYPES.get(error.flight_status, flight.FlightInternalError)
    message = f"{error.code}: {error.message}"
    if isinstance(error, Overloaded):
        message += f" (retry after {error.retry_after} s)"
    return error_type(message)


def internal_error() -> flight.FlightError:
    return flight.FlightInternalError(
        "internal_error: internal error; the server log has the details"
    )


@dataclass
class Call:
    """What a handler knows about its call, for the error it may have to answer with."""

    method: str
    stream: str | None = None
    token: str | None = None  # the caller's token name (never its secret)


@contextlib.contextmanager
def flight_errors(metrics: Metrics, method: str) -> Iterator[Call]:
    """Run a handler's body; whatever it raises leaves as a ``FlightError`` without traceback."""
    call = Call(method)
    try:
        yield call
    except ArrowportError as exc:
        metrics.errors.labels(exc.code, "flight").inc()
        log.info(
            "flight request refused",
            method=method,
            stream=call.stream,
            token=call.token,
            code=exc.code,
            reason=exc.message,
        )
        raise to_flight_error(exc) from None
    except flight.FlightError:
        raise
    except Exception as exc:
        metrics.errors.labels("internal_error", "flight").inc()
        log.exception(
            "unexpected error", method=method, stream=call.stream, token=call.token, exc_info=exc
        )
        raise internal_error() from None
