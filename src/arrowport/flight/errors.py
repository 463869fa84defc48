"""One place that turns failures into gRPC statuses, the way ``api/errors.py`` does for HTTP.

Every error a client sees carries the gRPC status code of its class (``grpc_code`` in
:mod:`arrowport.errors`: INVALID_ARGUMENT for a bad payload, NOT_FOUND, ALREADY_EXISTS,
RESOURCE_EXHAUSTED for a limit, UNAVAILABLE for overload, …) and a message that starts with the
stable code shared with HTTP (``schema_conflict: batch does not fit table 't': …``). Nothing else
is sent: no traceback, and no ``grpc-status-details-bin`` (grpc-go, and so the Go-based ADBC
Flight SQL driver, turns anything there that is not a ``google.rpc.Status`` into INTERNAL).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NoReturn

import grpc
import structlog

from arrowport.errors import ArrowportError, Overloaded
from arrowport.metrics import Metrics

log = structlog.get_logger("arrowport.flight")


def status_message(error: ArrowportError) -> str:
    message = f"{error.code}: {error.message}"
    if isinstance(error, Overloaded):
        message += f" (retry after {error.retry_after} s)"
    return message


def abort(context: grpc.ServicerContext, error: ArrowportError) -> NoReturn:
    """End the call with ``error``'s status (raises, as ``context.abort`` does)."""
    context.abort(grpc.StatusCode[error.grpc_code.upper()], status_message(error))
    raise AssertionError("unreachable")  # context.abort raises


@dataclass
class Call:
    """What a handler knows about its call, for the error it may have to answer with."""

    method: str
    stream: str | None = None
    token: str | None = None  # the caller's token name (never its secret)


@contextlib.contextmanager
def flight_errors(metrics: Metrics, method: str, context: grpc.ServicerContext) -> Iterator[Call]:
    """Run a handler's body; whatever it raises ends the call with a clean status. The call's
    duration (streaming included) and status go to the latency metric, route ``flight/<method>``."""
    call = Call(method)
    status = "OK"
    started = time.perf_counter()
    metrics.in_flight.inc()
    try:
        yield call
    except GeneratorExit:  # the client went away while a streaming answer was being sent
        status = "CANCELLED"
        raise
    except ArrowportError as exc:
        status = exc.grpc_code.upper()
        metrics.errors.labels(exc.code, "flight").inc()
        log.info(
            "flight request refused",
            method=method,
            stream=call.stream,
            token=call.token,
            code=exc.code,
            reason=exc.message,
        )
        abort(context, exc)
    except Exception as exc:
        status = "INTERNAL"
        metrics.errors.labels("internal_error", "flight").inc()
        log.exception(
            "unexpected error", method=method, stream=call.stream, token=call.token, exc_info=exc
        )
        context.abort(
            grpc.StatusCode.INTERNAL,
            "internal_error: internal error; the server log has the details",
        )
    finally:
        metrics.in_flight.dec()
        elapsed = time.perf_counter() - started
        metrics.latency.labels("GRPC", f"flight/{method}", status).observe(elapsed)
