"""One place that turns failures into gRPC statuses, the way ``api/errors.py`` does for HTTP.

Every error a client sees carries the gRPC status code of its class (``grpc_code`` in
:mod:`arrowport.errors`: INVALID_ARGUMENT for a bad payload, NOT_FOUND, ALREADY_EXISTS,
RESOURCE_EXHAUSTED for a limit, UNAVAILABLE for overload, …) and a message that starts with the
stable code shared with HTTP (``schema_conflict: batch does not fit table 't': …``). Nothing else
is sent: no traceback, and no ``grpc-status-details-bin`` (grpc-go, and so the Go-based ADBC
Flight SQL driver, turns anything there that is not a ``google.rpc.Status`` into INTERNAL).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

import grpc
import structlog

from arrowport.errors import ArrowportError, Overloaded
from arrowport.metrics import Metrics

if TYPE_CHECKING:  # the threads' module answers with this module's messages
    from arrowport.flight.threaded import ThreadContext

log = structlog.get_logger("arrowport.flight")


# The most a status message may take on the wire. gRPC sends it as the ``grpc-message``
# trailer, percent-encoded (3 bytes for each byte that is not printable ASCII, or is ``%``), and
# its C++ clients (pyarrow's, the ADBC drivers') refuse trailers past 16 KiB, and may refuse
# them past 8 KiB: the client then sees RESOURCE_EXHAUSTED "received metadata size exceeds ...",
# without the status or its code. Messages that echo what a client sent (a name, a key, a query
# DuckDB quotes back) are cut to this.
MAX_STATUS_BYTES = 4096
_CUT = " [... cut to fit a gRPC status: {} bytes in all]"


def status_message(error: ArrowportError) -> str:
    """``code: message`` (with when to retry, for an overload), cut to fit a gRPC status."""
    message = f"{error.code}: {error.message}"
    if isinstance(error, Overloaded):
        message += f" (retry after {error.retry_after} s)"
    return capped(message)


def capped(message: str, limit: int = MAX_STATUS_BYTES) -> str:
    """``message`` as UTF-8 text (a lone surrogate escaped), its start kept and the cut marked
    if it would take more than ``limit`` bytes percent-encoded."""
    data = message.encode("utf-8", "backslashreplace")
    if len(data) * 3 <= limit:
        return data.decode("utf-8")
    marker = _CUT.format(len(data))
    room = limit - len(marker)
    end = size = 0
    while end < len(data):
        byte = data[end]
        size += 1 if 0x20 <= byte <= 0x7E and byte != 0x25 else 3
        if size > room:
            break
        end += 1
    else:
        return data.decode("utf-8")
    while end and data[end] & 0xC0 == 0x80:  # not inside a character
        end -= 1
    return data[:end].decode("utf-8") + marker


# When the current call began (``time.perf_counter()``), where that is before its handler: a
# call of one request is read first (see arrowport.flight.single_request), and its latency counts
# from then. Set in the call's task; a handler on a thread has it from its ThreadContext.
CALL_STARTED: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "arrowport_flight_call_started", default=None
)


@dataclass
class Call:
    """What a handler knows about its call, for the error it may have to answer with."""

    method: str
    stream: str | None = None
    token: str | None = None  # the caller's token name (never its secret)


@contextlib.contextmanager
def flight_errors(
    metrics: Metrics, method: str, context: grpc.ServicerContext | ThreadContext
) -> Iterator[Call]:
    """Run a handler's body; whatever it raises ends the call with a clean status. The call's
    duration (streaming included) and status go to the latency metric, route ``flight/<method>``."""
    outcome = _Outcome(metrics, Call(method), getattr(context, "started", None))
    try:
        yield outcome.call
    except GeneratorExit:  # the client went away while a streaming answer was being sent
        outcome.status = "CANCELLED"
        raise
    except Exception as exc:
        if _ended_first(context):
            # Its client cancelled or went away, and its query was stopped: what that raised
            # (DuckDB's interrupt) is nobody's error, and nobody hears it.
            outcome.status = "CANCELLED"
            raise
        code, message = outcome.refused(exc)
        context.abort(code, message)
        raise AssertionError("unreachable") from None  # context.abort raises
    finally:
        outcome.done()


def _ended_first(context: grpc.ServicerContext | ThreadContext) -> bool:
    """Whether the call of a handler on a thread ended before the handler did."""
    from arrowport.flight.threaded import ThreadContext  # that module answers with this one's

    return isinstance(context, ThreadContext) and context.stop.requested


def flight_errors_async(
    metrics: Metrics,
    method: str,
    context: grpc.aio.ServicerContext[bytes, bytes],
    started: float | None = None,
) -> _AsyncFlightErrors:
    """:func:`flight_errors` for a handler on gRPC's asyncio server (``started``: when the call
    began, ``time.perf_counter()``, if before this)."""
    return _AsyncFlightErrors(metrics, method, context, started)


class _AsyncFlightErrors:
    # A class, not an async generator: every async generator an event loop starts is tracked
    # in a set of the loop's, and a small put is over in well under a millisecond.
    def __init__(
        self,
        metrics: Metrics,
        method: str,
        context: grpc.aio.ServicerContext[bytes, bytes],
        started: float | None,
    ) -> None:
        self._metrics = metrics
        self._method = method
        self._context = context
        self._started = started
        self._outcome: _Outcome | None = None

    async def __aenter__(self) -> Call:
        self._outcome = _Outcome(self._metrics, Call(self._method), self._started)
        return self._outcome.call

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        outcome = self._outcome
        assert outcome is not None
        try:
            if isinstance(exc, GeneratorExit):  # the client went away while being answered
                outcome.status = "CANCELLED"
            elif isinstance(exc, asyncio.CancelledError):  # the client cancelled, or went away
                outcome.status = "CANCELLED"
                call = outcome.call
                log.info(
                    "flight call cancelled",
                    method=call.method,
                    stream=call.stream,
                    token=call.token,
                )
            elif isinstance(exc, Exception):
                code, message = outcome.refused(exc)
                await self._context.abort(code, message)
                raise AssertionError("unreachable") from None  # context.abort raises
        finally:
            outcome.done()


class _Outcome:
    """A call's status as its handler ends: counted, logged, and timed."""

    def __init__(self, metrics: Metrics, call: Call, started: float | None = None) -> None:
        self.call = call
        self.status = "OK"
        self._metrics = metrics
        self._started = time.perf_counter() if started is None else started
        metrics.in_flight.inc()

    def refused(self, exc: Exception) -> tuple[grpc.StatusCode, str]:
        """The status and message that end the call on ``exc``, counted and logged."""
        call = self.call
        if isinstance(exc, ArrowportError):
            self.status = exc.grpc_code.upper()
            self._metrics.errors.labels(exc.code, "flight").inc()
            refused = log.warning if exc.server_fault else log.info
            refused(
                "flight request refused",
                method=call.method,
                stream=call.stream,
                token=call.token,
                code=exc.code,
                reason=exc.message,
            )
            return grpc.StatusCode[self.status], status_message(exc)
        self.status = "INTERNAL"
        self._metrics.errors.labels("internal_error", "flight").inc()
        log.exception(
            "unexpected error",
            method=call.method,
            stream=call.stream,
            token=call.token,
            exc_info=exc,
        )
        return (
            grpc.StatusCode.INTERNAL,
            "internal_error: internal error; the server log has the details",
        )

    def done(self) -> None:
        self._metrics.in_flight.dec()
        elapsed = time.perf_counter() - self._started
        route = f"flight/{self.call.method}"
        self._metrics.latency.labels("GRPC", route, self.status).observe(elapsed)
