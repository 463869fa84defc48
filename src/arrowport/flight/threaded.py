"""Plain (blocking) Flight handlers served from gRPC's asyncio server, on threads.

gRPC's asyncio server can run a plain generator handler on its own threads, but a call that ends
early (the client cancels, stops reading, or goes away) leaves that thread waiting for good to
hand over the next message, and the generator is never closed (so a query's result stays open).
:func:`streamed` runs such a handler here instead: one message at a time on ``threads``, the next
one made while the last is sent, and when the call ends, however it ends, the generator is closed
on a thread once its current step is over. :class:`ThreadContext` is what the handler sees of its
call.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Sequence
from concurrent.futures import Executor, Future
from typing import Any, NoReturn

import grpc
import structlog

log = structlog.get_logger("arrowport.flight")

_END = object()

Streaming = Callable[[bytes, "ThreadContext"], Generator[bytes, None, None]]


class ThreadContext:
    """A call's context for a handler running on a thread: it reads the call's metadata, and
    answers through the server's event loop."""

    def __init__(
        self, context: grpc.aio.ServicerContext[bytes, bytes], loop: asyncio.AbstractEventLoop
    ) -> None:
        self._context = context
        self._loop = loop

    def invocation_metadata(self) -> Sequence[tuple[str, str | bytes]] | None:
        return self._context.invocation_metadata()  # type: ignore[return-value]

    def send_initial_metadata(self, metadata: Sequence[tuple[str, str | bytes]]) -> None:
        self._on_loop(self._context.send_initial_metadata(metadata))

    def abort(self, code: grpc.StatusCode, details: str) -> NoReturn:
        """End the call with ``code`` and ``details`` (raises, as gRPC's own abort does; the
        call is ended on the event loop, in order after the messages already made)."""
        raise Aborted(code, details)

    def _on_loop(self, step: Awaitable[Any]) -> Any:
        async def run() -> Any:
            return await step

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result()


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
        loop = asyncio.get_running_loop()
        answers = handler(request, ThreadContext(context, loop))
        step: Future[object] | None = threads.submit(next, answers, _END)
        try:
            while step is not None:
                try:
                    answer = await asyncio.wrap_future(step)
                except Aborted as aborted:
                    await context.abort(aborted.code, aborted.details)
                if answer is _END:
                    step = None
                    return
                assert isinstance(answer, bytes)
                step = threads.submit(next, answers, _END)  # made while this one is sent
                yield answer
        finally:
            if step is not None:  # ended early: close the generator once its step is over
                step.add_done_callback(lambda _: threads.submit(_close, answers))

    return serve


def _close(answers: Generator[bytes, None, None]) -> None:
    try:
        answers.close()
    except Exception as exc:  # the call is over: nobody is left to tell but the log
        log.info("flight call ended early; closing it failed", reason=str(exc))
