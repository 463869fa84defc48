"""At most ``flight.max_concurrent_calls`` Flight calls at once; one past it is refused as any
overload is, UNAVAILABLE ``overloaded`` with when to retry, counted and logged. Of them, one
token may have at most ``flight.max_concurrent_calls_per_client`` (RESOURCE_EXHAUSTED
``overloaded`` beyond: only that client can free room), so that one client opening calls and
sending nothing cannot take every call from the others until its calls time out.

gRPC's own limit (``maximum_concurrent_rpcs``) refuses before any handler runs, with
RESOURCE_EXHAUSTED "Concurrent RPC limit exceeded!": a status no client can tell from a quota,
without Arrowport's code, metric or log line. So every handler is wrapped here to count its
call, and gRPC's limit stays only as a backstop against a flood of calls, far enough above this
one (:func:`backstop`) that it does not refuse first.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from typing import TypeVar

import grpc

from arrowport.errors import ClientQuotaExceeded, Overloaded
from arrowport.flight.errors import flight_errors_async
from arrowport.metrics import Metrics

Request = TypeVar("Request")
Answer = TypeVar("Answer")
AsyncContext = grpc.aio.ServicerContext[bytes, bytes]
Coroutine = Callable[[Request, AsyncContext], Awaitable[Answer]]
AsyncStream = Callable[[Request, AsyncContext], AsyncGenerator[bytes, None]]


def backstop(calls: int) -> int:
    """gRPC's own limit for ``calls`` of Arrowport's: room for as many again being refused."""
    return 2 * calls + 64


class CallLimit:
    """Counts the calls being served (on the event loop and on threads alike)."""

    def __init__(self, most: int, metrics: Metrics, most_per_client: int) -> None:
        self._most = most
        self._most_per_client = most_per_client
        self._metrics = metrics
        self._running = 0
        self._by_client: dict[str, int] = {}
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def client(self, name: str | None) -> Iterator[None]:
        """Held while a call of the token ``name`` runs (None, a caller without a token: not
        counted); :class:`ClientQuotaExceeded` if it has as many as it may."""
        if name is None:
            yield
            return
        with self._lock:
            running = self._by_client.get(name, 0)
            if running >= self._most_per_client:
                raise ClientQuotaExceeded(
                    f"this token has {running} Flight calls running, as many as one client may "
                    "(flight.max_concurrent_calls_per_client); let some end before starting "
                    "more"
                )
            self._by_client[name] = running + 1
        try:
            yield
        finally:
            with self._lock:
                left = self._by_client[name] - 1
                if left:
                    self._by_client[name] = left
                else:
                    del self._by_client[name]

    @property
    def running(self) -> int:
        return self._running

    def _admit(self) -> bool:
        with self._lock:
            if self._running >= self._most:
                return False
            self._running += 1
            return True

    def _leave(self) -> None:
        with self._lock:
            self._running -= 1

    def _refusal(self) -> Overloaded:
        return Overloaded(
            f"the server is serving as many Flight calls as it may at once "
            f"({self._most}, flight.max_concurrent_calls); retry shortly"
        )

    def coroutine(
        self, method: str, handler: Coroutine[Request, Answer]
    ) -> Coroutine[Request, Answer]:
        """``handler`` (a coroutine on the event loop: its answer, or answering with
        ``context.write``), counted."""

        async def counted(request: Request, context: AsyncContext) -> Answer:
            if not self._admit():
                async with flight_errors_async(self._metrics, method, context):
                    raise self._refusal()
            try:
                return await handler(request, context)
            finally:
                self._leave()

        return counted

    def stream(self, method: str, handler: AsyncStream[Request]) -> AsyncStream[Request]:
        """``handler`` (an async generator of answers on the event loop), counted."""

        async def counted(request: Request, context: AsyncContext) -> AsyncGenerator[bytes, None]:
            if not self._admit():
                async with flight_errors_async(self._metrics, method, context):
                    raise self._refusal()
            try:  # closed now, not when the garbage collector gets to it: it holds the put's state
                async with contextlib.aclosing(handler(request, context)) as answers:
                    async for answer in answers:
                        yield answer
            finally:
                self._leave()

        return counted
