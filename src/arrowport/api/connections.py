"""HTTP connections that cannot exhaust the server: a deadline for every request's head, and a
cap on open connections.

uvicorn's protocol waits for a request's headers for ever: 20,000 connections that each send
half a header used up every file descriptor and ``/health`` stopped answering. So each request's
head (request line and headers) must arrive within ``api.header_timeout_seconds`` of its first
byte (or of the connection), and at most ``api.max_connections`` connections stay open: when
one more arrives, the connection that has waited longest for a request head is closed to make
room (a connection in the middle of a request is never closed for this; when every connection
is, the new one is).

The protocol also keeps a request body's chunks as they arrive (:mod:`arrowport.api.body_chunks`)
instead of copying them twice on the event loop.
"""

from __future__ import annotations

import asyncio
import resource
from collections import OrderedDict
from typing import Any

import structlog
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from arrowport.api.body_chunks import BodyChunks

log = structlog.get_logger("arrowport.http")


class _Idle:
    """Connections waiting for a request head, oldest first (shared by one server's protocols)."""

    def __init__(self) -> None:
        self.waiting: OrderedDict[int, GuardedProtocol] = OrderedDict()


def protocol_class(header_timeout: float, max_connections: int) -> type[GuardedProtocol]:
    """A protocol class for ``uvicorn.Config(http=...)`` with these limits."""
    idle = _Idle()
    return type(
        "ArrowportHttpProtocol",
        (GuardedProtocol,),
        {"header_timeout": header_timeout, "max_connections": max_connections, "idle": idle},
    )


class GuardedProtocol(HttpToolsProtocol):
    header_timeout: float = 10.0
    max_connections: int = 1024
    idle: _Idle = _Idle()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_deadline: asyncio.TimerHandle | None = None
        self._in_request = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_head()
        if len(self.connections) > self.max_connections:
            self._make_room()

    def data_received(self, data: bytes) -> None:
        if self._head_deadline is None and not self._in_request:
            self._await_head()  # the first bytes of a new request on a kept-alive connection
        super().data_received(data)

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        if cycle is not None and not isinstance(cycle.body, BodyChunks):
            # uvicorn puts back a bytearray after each receive(); it uses only +=, len, bytes()
            cycle.body = BodyChunks()  # type: ignore[assignment]
        super().on_body(body)

    def on_headers_complete(self) -> None:
        self._head_arrived()
        self._in_request = True
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        self._in_request = False
        super().on_response_complete()
        # Waiting for the next request: uvicorn's keep-alive timeout covers the silence, this
        # connection may be closed to make room, and its next head gets a deadline of its own.
        self.idle.waiting[id(self)] = self

    def connection_lost(self, exc: Exception | None) -> None:
        self._head_arrived()
        super().connection_lost(exc)

    def _await_head(self) -> None:
        self.idle.waiting[id(self)] = self
        self.idle.waiting.move_to_end(id(self))
        self._head_deadline = self.loop.call_later(self.header_timeout, self._too_slow)

    def _head_arrived(self) -> None:
        self.idle.waiting.pop(id(self), None)
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _too_slow(self) -> None:
        self._head_deadline = None
        self.idle.waiting.pop(id(self), None)
        if not self.transport.is_closing():
            self.transport.close()

    def _make_room(self) -> None:
        """Close the connection that has waited longest for a request head (this one, if none
        other is waiting)."""
        oldest = next(iter(self.idle.waiting.values()), self)
        oldest._head_arrived()
        if not oldest.transport.is_closing():
            oldest.transport.close()


def raise_file_limit(wanted: int) -> int:
    """Raise this process's open-file limit towards ``wanted`` (up to the hard limit); returns
    the limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft
