"""One place that turns failures into Flight errors, the way ``api/errors.py`` does for HTTP.

Every error a client sees has a message that starts with the stable code shared with HTTP
(``schema_conflict: batch does not fit table 't': ...``) and carries the same JSON body as the HTTP
error in ``extra_info``, plus ``flight_status``.

pyarrow sends a Python exception that is not a ``FlightError`` to the client *with its traceback*,
so handlers only ever raise ``FlightError`` subclasses. Flight's own status codes have no
"invalid argument", "not found" or "already exists" (the Python exceptions that map to those gRPC
codes, ``ArrowInvalid`` and ``ArrowKeyError``, leak the traceback), so those three are sent as
``FlightServerError`` and told apart by the code at the start of the message and by
``flight_status`` in ``extra_info``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

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


def to_flight_error(error: ArrowportError, stream: str | None = None) -> flight.FlightError:
    """The Flight error a client receives for ``error``."""
    body: dict[str, Any] = error.to_body(stream) | {"flight_status": error.flight_status}
    if isinstance(error, Overloaded):
        body["retry_after"] = error.retry_after
    error_type = _ERROR_TYPES.get(error.flight_status, flight.FlightInternalError)
    extra_info = json.dumps(body, default=str).encode()
    return error_type(f"{error.code}: {error.message}", extra_info)


def internal_error(stream: str | None = None) -> flight.FlightError:
    body: dict[str, Any] = {"status": "error"}
    if stream is not None:
        body["stream"] = stream
    body |= {
        "message": "internal error; the server log has the details",
        "code": "internal_error",
        "flight_status": "internal",
    }
    return flight.FlightInternalError(
        f"internal_error: {body['message']}", json.dumps(body).encode()
    )


@dataclass
class Call:
    """What a handler knows about its call, for the error it may have to answer with."""

    method: str
    stream: str | None = None


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
            code=exc.code,
            reason=exc.message,
        )
        raise to_flight_error(exc, call.stream) from None
    except flight.FlightError:
        raise
    except Exception as exc:
        metrics.errors.labels("internal_error", "flight").inc()
        log.exception("unexpected error", method=method, stream=call.stream, exc_info=exc)
        raise internal_error(call.stream) from None
