"""Plain (blocking) Flight handlers served from gRPC's asyncio server, on threads.

gRPC's asyncio server can run a plain generator handler on its own threads, but a call that ends
early (the client cancels, stops reading, or goes away) leaves that thread waiting for good to
hand over the next message, and the generator is never closed (so a query's result stays open).
:func:`streamed` runs such a handler here instead: one message at a time on ``threads``, the next
one made while the last is sent, and when the call ends, however it ends, the generator is closed
on a thread once its current step is over. :class:`ThreadContext` is what the handler sees of its
call.

A client that stops taking the answer holds what its step holds (a query's turn among
``limits.max_concurrent_queries``, its open result) while gRPC waits to send the next message.
So a message waits for its client at most until the query's time is up
(``limits.query_timeout_seconds``, which the answer's sending counts against as its rendering
does), and never longer than ``limits.body_timeout_seconds``: then what the step held is given
back, and the call ends DEADLINE_EXCEEDED. (gRPC sends that status only after the message held
up, once the client reads again or goes away: until then the call is still one of
``flight.max_concurrent_calls``.)

A step may block (a query waiting for its turn) and outlive its call, so ``threads`` must have
room for every such step beside one step of every live call; see ``FlightService``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Generator, Sequence
from concurrent.futures import Executor, Future
from typing import Any, NoReturn, TypeVar

import grpc
import structlog

from arrowport.errors import RequestTimeout, ShuttingDown
from arrowport.flight.errors import CALL_STARTED, status_message
from arrowport.storage.query_stop import QueryStop

log = structlog.get_logger("arrowport.flight")

_END = object()
T = TypeVar("T")

Streaming = Callable[[bytes, "ThreadContext"], Generator[bytes, None, None]]
Unary = Callable[[bytes, "ThreadContext"], bytes]


class ThreadContext:
    """A call's context for a handler running on a thread: its metadata, its abort, and
    ``stop``, which stops the query a step runs when the call ends before it (a handler
    passes it to the query it starts)."""

    def __init__(self, context: grpc.aio.ServicerContext[bytes, bytes]) -> None:
        self._context = context
        self.stop = QueryStop()
        self.started = CALL_STARTED.get()  # made on the event loop, in the call's task

    def invocation_metadata(self) -> Sequence[tuple[str, str | bytes]] | None:
        return self._context.invocation_metadata()  # type: ignore[return-value]

    def abort(self, code: grpc.StatusCode, details: str) -> NoReturn:
        """End the call with ``code`` and ``details`` (raises, as gRPC's own abort does; the
        call is ended on the event loop, in order after the messages already made)."""
        raise Aborted(code, details)


class Aborted(Exception):
    """A handler on a thread ended its call with this status (see :meth:`ThreadContext.abort`)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


def streamed(
    handler: Streaming, threads: Executor, stall_seconds: float
) -> Callable[[bytes, grpc.aio.ServicerContext[bytes, bytes]], Coroutine[Any, Any, None]]:
    """``handler`` (one request, a stream of answers) as an asyncio handler whose every step
    runs on ``threads``, and whose every answer waits for its client at most until the query
    the handler runs is out of time, or ``stall_seconds``."""

    async def serve(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> None:
        on_thread = ThreadContext(context)
        answers = handler(request, on_thread)
        step: Future[object] | None = None
        try:
            step = _next_step(threads, answers)
            while True:
                try:
                    answer = await asyncio.wrap_future(step)
                except Aborted as aborted:
                    await context.abort(aborted.code, aborted.details)
                if answer is _END:
                    step = None
                    return
                assert isinstance(answer, bytes)
                step = _next_step(threads, answers)  # made while this one is sent
                await _sent(context, answer, on_thread.stop, stall_seconds)
        except (ShuttingDown, RequestTimeout) as exc:
            if step is not None:  # first: the status waits behind a message the client holds up
                _give_back(on_thread, step, threads, answers)
                step = None
            await context.abort(grpc.StatusCode[exc.grpc_code.upper()], status_message(exc))
        finally:
            if step is not None:
                _give_back(on_thread, step, threads, answers)

    return serve


async def _sent(
    context: grpc.aio.ServicerContext[bytes, bytes],
    answer: bytes,
    stop: QueryStop,
    stall_seconds: float,
) -> None:
    """Send ``answer`` once its client takes it, within the time its query has left and
    ``stall_seconds``."""
    left = stop.time_left()
    wait = stall_seconds if left is None else max(0.0, min(left, stall_seconds))
    try:
        await asyncio.wait_for(context.write(answer), wait)
    except TimeoutError:
        if left is not None and left <= stall_seconds:
            raise stop.overdue() from None
        raise RequestTimeout(
            f"the client took no message of the answer for {stall_seconds:g} seconds; the "
            "call was ended (limits.body_timeout_seconds)"
        ) from None


def on_threads(
    handler: Unary, threads: Executor
) -> Callable[[bytes, grpc.aio.ServicerContext[bytes, bytes]], Coroutine[Any, Any, bytes]]:
    """``handler`` (one request, one answer) as an asyncio handler run on ``threads``. When the
    call ends first (the client cancelled, or its deadline passed), the query the handler runs
    is stopped: gRPC tells a plain handler on its own threads nothing of that (a Flight SQL
    query cancelled by its client would run on, holding its turn among the queries, for as long
    as a query may run), and a plain handler that ends its call once the event loop has stopped
    waits for it for good (and the process with it)."""

    async def serve(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        on_thread = ThreadContext(context)
        try:
            step = _submitted(threads, handler, request, on_thread)
        except ShuttingDown as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, status_message(exc))
        try:
            return await asyncio.wrap_future(step)
        except Aborted as aborted:
            await context.abort(aborted.code, aborted.details)
        except asyncio.CancelledError:
            on_thread.stop()
            raise

    return serve


def _give_back(
    on_thread: ThreadContext,
    step: Future[object],
    threads: Executor,
    answers: Generator[bytes, None, None],
) -> None:
    """The call ends early: stop the query its step runs, if any, and close the generator once
    that step is over."""
    on_thread.stop()
    step.add_done_callback(lambda _: _close_on(threads, answers))


def _next_step(threads: Executor, answers: Generator[bytes, None, None]) -> Future[object]:
    return _submitted(threads, next, answers, _END)


def _submitted(threads: Executor, work: Callable[..., T], *args: Any) -> Future[T]:
    try:
        return threads.submit(work, *args)
    except RuntimeError:  # the executor is shut down
        raise ShuttingDown("the server is shutting down") from None


def _close_on(threads: Executor, answers: Generator[bytes, None, None]) -> None:
    try:
        threads.submit(_close, answers)
    except RuntimeError:  # shut down meanwhile: close it here, the server is stopping anyway
        _close(answers)


def _close(answers: Generator[bytes, None, None]) -> None:
    try:
        answers.close()
    except Exception as exc:  # the call is over: nobody is left to tell but the log
        log.info("flight call ended early; closing it failed", reason=str(exc))
