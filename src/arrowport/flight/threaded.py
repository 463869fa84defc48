"""Plain (blocking) Flight handlers served from gRPC's asyncio server, on threads.

gRPC's asyncio server can run a plain generator handler on its own threads, but a call that ends
early (the client cancels, stops reading, or goes away) leaves that thread waiting for good to
hand over the next message, and the generator is never closed (so a query's result stays open).
:func:`streamed` runs such a handler here instead: one message at a time on ``threads``, the next
one made while the last is sent, and when the call ends, however it ends, the generator is closed
on a thread once its current step is over. :class:`ThreadContext` is what the handler sees of its
call.

A step may block (a query waiting for its turn) and outlive its call, so ``threads`` must have
room for every such step beside one step of every live call; see ``FlightService``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Generator, Sequence
from concurrent.futures import Executor, Future
from typing import NoReturn

import grpc
import structlog

from arrowport.errors import ShuttingDown
from arrowport.flight.errors import status_message
from arrowport.storage.query import QueryStop

log = structlog.get_logger("arrowport.flight")

_END = object()

Streaming = Callable[[bytes, "ThreadContext"], Generator[bytes, None, None]]


class ThreadContext:
    """A call's context for a handler running on a thread: its metadata, its abort, and
    ``stop``, which stops the query a step runs when the call ends before it (a handler
    passes it to the query it starts)."""

    def __init__(self, context: grpc.aio.ServicerContext[bytes, bytes]) -> None:
        self._context = context
        self.stop = QueryStop()

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
    handler: Streaming, threads: Executor
) -> Callable[[bytes, grpc.aio.ServicerContext[bytes, bytes]], AsyncIterator[bytes]]:
    """``handler`` (one request, a stream of answers) as an asyncio handler whose every step
    runs on ``threads``."""

    async def serve(
        request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> AsyncIterator[bytes]:
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
                yield answer
        except ShuttingDown as exc:
            await context.abort(grpc.StatusCode[exc.grpc_code.upper()], status_message(exc))
        finally:
            if step is not None:  # ended early: close the generator once its step is over
                on_thread.stop()  # which stops the query it runs, if any
                step.add_done_callback(lambda _: _close_on(threads, answers))

    return serve


def _next_step(threads: Executor, answers: Generator[bytes, None, None]) -> Future[object]:
    try:
        return threads.submit(next, answers, _END)
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
