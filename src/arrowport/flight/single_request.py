"""Single-message calls read their request only once the call is admitted and its caller known.

gRPC's receive limit is one for every method of a server, and Flight's is sized for a put's
frames (``limits.max_message_bytes`` plus room for a wide schema). A plain unary handler is
called only after gRPC has read its request message whole: every GetFlightInfo, GetSchema,
DoGet, DoAction, ListFlights or ListActions could make the server hold up to that much before
any check ran, unauthenticated callers included (eight 200 MB tickets with a wrong token: 1.8 GB
of server memory).

So these calls are served as client-streaming ones (the same bytes on the wire: gRPC does not
tell a unary request from a stream of one message): the call limit admits the call
(:mod:`arrowport.flight.call_limit`), the caller's token is checked, and only then is the one
message read, within ``limits.body_timeout_seconds``; one longer than any such request may be
(``largest``: ``limits.max_query_body_bytes`` and room for a schema) is refused
RESOURCE_EXHAUSTED ``payload_too_large`` before anything parses it. The caller's token holds
one of its calls (``flight.max_concurrent_calls_per_client``) from its check to the answer.
Until its message is read a call holds no more than gRPC's flow-control window
(``flight.receive_window_bytes``). What an admitted, authenticated caller may still make the
server hold is one message per call: at most ``flight.max_concurrent_calls`` of them at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import grpc

from arrowport.config import AuthSettings
from arrowport.errors import InvalidOptions, PayloadTooLarge
from arrowport.flight.arrival import CANCEL_GRACE_SECONDS, Arrival
from arrowport.flight.call_limit import CallLimit
from arrowport.flight.errors import CALL_STARTED, flight_errors_async
from arrowport.flight.security import caller
from arrowport.metrics import Metrics

Answer = TypeVar("Answer")
AsyncContext = grpc.aio.ServicerContext[bytes, bytes]
OneRequest = Callable[[bytes, AsyncContext], Awaitable[Answer]]
Requests = Callable[[AsyncIterator[bytes], AsyncContext], Awaitable[Answer]]


class SingleRequest:
    """Turns a handler of one request into a client-streaming one that reads that request only
    after the caller's token is checked."""

    def __init__(
        self,
        auth: AuthSettings,
        metrics: Metrics,
        stall_seconds: float,
        largest: int,
        calls: CallLimit,
    ) -> None:
        self._auth = auth
        self._calls = calls
        self._largest = largest
        self._metrics = metrics
        self._stall_seconds = stall_seconds

    def reading(self, method: str, handler: OneRequest[Answer]) -> Requests[Answer]:
        """``handler``, called with the call's one request message once it is read."""

        async def serve(requests: AsyncIterator[bytes], context: AsyncContext) -> Answer:
            with contextlib.ExitStack() as held:  # the caller's call slot, until the answer
                request = await self._request(method, requests, context, held)
                return await handler(request, context)

        return serve

    async def _request(
        self,
        method: str,
        requests: AsyncIterator[bytes],
        context: AsyncContext,
        held: contextlib.ExitStack,
    ) -> bytes:
        started = time.perf_counter()
        CALL_STARTED.set(started)  # the handler's latency counts from here too
        arrival: Arrival | None = None
        token: str | None = None
        # A call being read is in flight (its handler counts it from then on).
        self._metrics.in_flight.inc()
        try:
            principal = caller(context, self._auth)  # before a byte of the request is read
            if not principal.anonymous:
                token = principal.name
            held.enter_context(self._calls.client(token))
            arrival = Arrival(requests, self._stall_seconds, "the request", "the call was ended")
            message = await arrival.next()
            if message is None:
                # A cancelled call's stream ends as this one did; its cancellation comes next.
                await asyncio.sleep(CANCEL_GRACE_SECONDS)
                raise InvalidOptions("the call ended without its request message")
            if len(message) > self._largest:
                raise PayloadTooLarge(
                    f"the request message is {len(message)} bytes, longer than any this call "
                    f"takes ({self._largest}: limits.max_query_body_bytes and 16 MiB for a schema)",
                    limit=self._largest,
                )
            return message
        except (Exception, asyncio.CancelledError) as exc:
            failure = exc
        finally:
            self._metrics.in_flight.dec()
            if arrival is not None:
                arrival.close()
        # The handler never runs: the call's status, count and log line are answered here.
        async with flight_errors_async(self._metrics, method, context, started) as call:
            call.token = token
            raise failure
