"""HTTP connections that cannot exhaust the server: a deadline and a size bound for every
request's head, and a cap on open connections.

uvicorn's protocol waits for a request's headers for ever: 20,000 connections that each send
half a header used up every file descriptor and ``/health`` stopped answering. So each request's
head (request line and headers) must arrive within ``api.header_timeout_seconds`` of its first
byte (or of the connection), and at most ``api.max_connections`` connections stay open: when
one more arrives, the connection that has waited longest for a request head is closed to make
room (a connection in the middle of a request is never closed for this; when every connection
is, the new one is).

Both count from the TCP accept. With TLS the handshake is done by :class:`TlsConnection`, which
tells the protocol inside it about the connection before the handshake starts: a connection
that never finishes its handshake counts against the cap, may be closed to make room, and has
the same deadline for its handshake and first head together (asyncio's own handshake timeout,
60 s by default, is the head deadline too).

A head is also bounded in size: once more than ``api.max_header_bytes`` of it have been read
without its end, the client gets 431 ``header_too_large`` and the connection is closed, so the
parser never holds more (it joins a header's pieces by copying: 100 MB of one header value
stalled the event loop for seconds). The bytes counted are those read from the start of a
request to the end of its head; a body does not count, and each request on a kept-alive
connection has a budget of its own (one whose head begins in the same read as the previous
request's end may get up to that read's size beyond it).

A connection answered from its head (431, a head the parser refuses, a transfer coding it
cannot frame) is not closed at once: while the client is still sending, a close with its bytes
unread is a TCP reset, which can reach the client before the answer does and make it lose the
answer. So the server lingers, as nginx does: it sends its end (where the transport can), reads
and drops what still comes, for at most :data:`LINGER_SECONDS` and :data:`LINGER_BYTES`, and
closes once the client does. A lingering connection is the first closed to make room.

The protocol also keeps a request body's chunks as they arrive (:mod:`arrowport.api.body_chunks`)
instead of copying them twice on the event loop.
"""

from __future__ import annotations

import asyncio
import json
import math
import resource
import ssl
from asyncio.sslproto import SSLProtocol
from collections import OrderedDict
from typing import Any

import structlog
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from arrowport.api.body_chunks import BodyChunks
from arrowport.errors import (
    ArrowportError,
    BadRequest,
    HeaderTooLarge,
    NotImplementedFeature,
    shown,
)
from arrowport.metrics import Metrics

log = structlog.get_logger("arrowport.http")

# How long, and for how many of the client's bytes, a connection answered from its head keeps
# reading (and dropping) what the client still sends before it closes.
LINGER_SECONDS = 5.0
LINGER_BYTES = 64 * 1024**2


class _Shared:
    """What one server's connections share: how many are open (from their TCP accept) and those
    waiting for a request head, oldest first."""

    def __init__(self) -> None:
        self.open = 0
        self.waiting: OrderedDict[int, GuardedProtocol] = OrderedDict()


def protocol_class(
    header_timeout: float,
    max_connections: int,
    max_header_bytes: int = 64 * 1024,
    metrics: Metrics | None = None,
) -> type[GuardedProtocol]:
    """A protocol class for ``uvicorn.Config(http=...)`` with these limits; the requests it
    refuses from their heads count in ``metrics``' errors."""
    return type(
        "ArrowportHttpProtocol",
        (GuardedProtocol,),
        {
            "header_timeout": header_timeout,
            "max_connections": max_connections,
            "max_header_bytes": max_header_bytes,
            "shared": _Shared(),
            "metrics": metrics,
        },
    )


def tls_protocol_class(
    http_class: type[asyncio.Protocol], context: ssl.SSLContext
) -> type[TlsConnection]:
    """A protocol class that does TLS itself around ``http_class`` (a :func:`protocol_class`),
    for a server created without ``ssl=``."""
    if not issubclass(http_class, GuardedProtocol):
        raise TypeError(f"{http_class.__name__} is not a GuardedProtocol")
    return type(
        "ArrowportTlsProtocol", (TlsConnection,), {"http_class": http_class, "context": context}
    )


class GuardedProtocol(HttpToolsProtocol):
    header_timeout: float = 10.0
    max_connections: int = 1024
    max_header_bytes: int = 64 * 1024
    shared: _Shared = _Shared()
    metrics: Metrics | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_deadline: asyncio.TimerHandle | None = None
        self._in_request = False  # from a head's end to its response's
        self._tcp: asyncio.BaseTransport | None = None  # the accepted socket's transport
        self._counted = False
        self._reading_head = True  # from a request's first byte to its head's end
        self._head_bytes = 0
        self._refused = False  # answered from its head: what follows is not parsed
        self._linger: asyncio.TimerHandle | None = None  # set while lingering before the close
        self._earlier: list[RequestResponseCycle] = []  # requests still answering, oldest first
        self._dropped = 0

    def accepted(self, tcp: asyncio.BaseTransport) -> None:
        """The TCP connection is open (with TLS, before the handshake): it counts against the
        cap, and the deadline for its first head starts."""
        self._tcp = tcp
        self._counted = True
        self.shared.open += 1
        self._await_head()
        if self.shared.open > self.max_connections:
            self._make_room()

    def closed(self) -> None:
        """The TCP connection is gone (called once or more)."""
        if self._counted:
            self._counted = False
            self.shared.open -= 1
        self._head_arrived()
        if self._linger is not None:
            self._linger.cancel()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self._tcp is None:  # no TLS: this is the accept
            self.accepted(transport)

    def data_received(self, data: bytes) -> None:
        if self._linger is not None:
            self._drop(len(data))
            return
        if self._head_deadline is None and not self._in_request:
            self._await_head()  # the first bytes of a new request on a kept-alive connection
        while data and self._reading_head:
            room = self.max_header_bytes - self._head_bytes
            if room <= 0:
                self._refuse_head()
                return
            piece, data = (data[:room], data[room:]) if len(data) > room else (data, b"")
            self._head_bytes += len(piece)
            super().data_received(piece)
            if self._closing():
                return
        if data:
            super().data_received(data)

    # What the parser still reads after an answer from the head (the rest of the same read)
    # is dropped: no request of it reaches the application or an upgrade.

    def on_message_begin(self) -> None:
        if not self._refused:
            super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        if not self._refused:
            super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._refused:
            super().on_header(name, value)

    def _should_upgrade(self) -> bool:
        return not self._refused and super()._should_upgrade()

    def _unsupported_upgrade_warning(self) -> None:
        if not self._refused:
            super()._unsupported_upgrade_warning()

    def on_body(self, body: bytes) -> None:
        if self._refused:
            return
        cycle = self.cycle
        if cycle is not None and not isinstance(cycle.body, BodyChunks):
            # uvicorn puts back a bytearray after each receive(); it uses only +=, len, bytes()
            cycle.body = BodyChunks()  # type: ignore[assignment]
        super().on_body(body)

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self._earlier.append(self.cycle)  # pipelined behind it: uvicorn forgets it here
        self._reading_head = False
        self._head_arrived()
        self._in_request = True
        coding = self._unknown_transfer_coding()
        if coding is not None:
            # The parser frames only "chunked": a body in any other coding would reach the
            # application still encoded, to be refused as if its data were wrong.
            error = NotImplementedFeature(
                f"the transfer coding {shown(coding)} is not supported: send the body with "
                "Content-Length or chunked, and compress it with Content-Encoding"
            )
            self._answer_and_close(b"501 Not Implemented", error)
            return
        super().on_headers_complete()

    def _unknown_transfer_coding(self) -> str | None:
        for name, value in self.headers:
            if name == b"transfer-encoding":
                for coding in value.decode("latin-1").split(","):
                    if coding.strip().lower() not in ("chunked", "identity", ""):
                        return coding.strip()
        return None

    def on_message_complete(self) -> None:
        if self._refused:
            return
        # What follows is the next request's head, with a budget of its own.
        self._reading_head = True
        self._head_bytes = 0
        super().on_message_complete()

    def on_response_complete(self) -> None:
        self._in_request = False
        self._earlier = [cycle for cycle in self._earlier if not cycle.response_complete]
        super().on_response_complete()
        # Waiting for the next request: uvicorn's keep-alive timeout covers the silence, this
        # connection may be closed to make room, and its next head gets a deadline of its own.
        if self._counted:
            self.shared.waiting[id(self)] = self

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed()
        super().connection_lost(exc)

    def _await_head(self) -> None:
        self.shared.waiting[id(self)] = self
        self.shared.waiting.move_to_end(id(self))
        if self._head_deadline is not None:
            self._head_deadline.cancel()
        self._head_deadline = self.loop.call_later(self.header_timeout, self._too_slow)

    def _head_arrived(self) -> None:
        self.shared.waiting.pop(id(self), None)
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _closing(self) -> bool:
        # With TLS the connection is closed below the transport the parser writes to.
        return (
            self._linger is not None
            or self.transport.is_closing()
            or (self._tcp is not None and self._tcp.is_closing())
        )

    def _close(self) -> None:
        """Close the TCP connection (with TLS, without waiting for the client's close_notify)."""
        self._head_arrived()
        if self._tcp is not None and not self._tcp.is_closing():
            self._tcp.close()

    def _too_slow(self) -> None:
        self._head_deadline = None
        self._close()

    def _make_room(self) -> None:
        """Close the connection that has waited longest for a request head (this one, if none
        other is waiting)."""
        oldest = next(iter(self.shared.waiting.values()), self)
        if oldest._linger is not None:
            oldest._abort()  # answered already; a close would wait for a client not reading
        else:
            oldest._close()

    def _refuse_head(self) -> None:
        error = HeaderTooLarge(
            f"the request head is larger than api.max_header_bytes ({self.max_header_bytes})",
            max_header_bytes=self.max_header_bytes,
        )
        self._answer_and_close(b"431 Request Header Fields Too Large", error)

    def send_400_response(self, msg: str) -> None:
        # What the parser could not read (uvicorn answers it in text/plain, without a code).
        if self._refused:  # already answered (a 501 head whose body the parser then refused)
            return
        error = BadRequest(f"the request is not valid HTTP/1.1 ({msg.rstrip('.')})")
        self._answer_and_close(b"400 Bad Request", error)

    def _answer_and_close(self, status: bytes, error: ArrowportError) -> None:
        # Never routed, so neither the request context nor the error handlers see it: counted
        # and logged here, as they count and log every other refusal.
        if self.metrics is not None:
            self.metrics.errors.labels(error.code, "http").inc()
        log.info(
            "request refused",
            code=error.code,
            status=error.status,
            reason=error.message,
            client=self.client,
        )
        self._refused = True
        body = json.dumps(error.to_body()).encode()
        head = [b"HTTP/1.1 " + status + b"\r\n"]
        head += [
            name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers
        ]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self._linger_then_close()

    def _linger_then_close(self) -> None:
        """Send this side's end, then read and drop what the client still sends until it
        closes, or for at most LINGER_SECONDS and LINGER_BYTES (see the module's docstring)."""
        self._head_arrived()
        if self._tcp is None or self._tcp.is_closing():
            return
        # Requests of this connection not yet answered (one whose body was refused midway, one
        # running with others pipelined behind it) are answered already: their applications
        # see the client gone, as at a close, and write nothing after the answer.
        cycles = [*self._earlier, *(cycle for cycle, _ in self.pipeline)]
        if self.cycle is not None:
            cycles.append(self.cycle)
        for cycle in cycles:
            if not cycle.response_complete:
                cycle.disconnected = True
            cycle.waiting_for_100_continue = False
            cycle.message_event.set()
        self._earlier.clear()
        if self.transport.can_write_eof():  # not with TLS: its close_notify ends reading too
            self.transport.write_eof()
        if self.flow is not None:
            self.flow.resume_writing()
            self.flow.resume_reading()  # reading may have been paused for a body or a pipeline
        self._linger = self.loop.call_later(LINGER_SECONDS, self._abort)
        if self._counted:  # the first to go when a connection must make room
            self.shared.waiting[id(self)] = self
            self.shared.waiting.move_to_end(id(self), last=False)

    def _drop(self, size: int) -> None:
        self._dropped += size
        if self._dropped > LINGER_BYTES:
            self._abort()

    def _abort(self) -> None:
        """Close at once, dropping what was not sent: the client has had its time (a close
        would wait for a client that never reads, and the connection would stay counted)."""
        self._head_arrived()
        abort = getattr(self._tcp, "abort", None)  # uvloop's transports have it too
        if abort is not None:
            abort()
        elif self._tcp is not None:
            self._tcp.close()


class TlsConnection(SSLProtocol):
    """TLS around a :class:`GuardedProtocol`, which learns of the connection at its accept."""

    http_class: type[GuardedProtocol]
    context: ssl.SSLContext

    def __init__(self, **kwargs: Any) -> None:
        self.http = self.http_class(**kwargs)
        super().__init__(
            self.http.loop,
            self.http,
            self.context,
            None,  # type: ignore[arg-type]  # no waiter: nothing awaits the handshake
            server_side=True,
            # A backstop: the head deadline, from the accept, closes the connection first.
            ssl_handshake_timeout=math.ceil(self.http.header_timeout),
        )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.http.accepted(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.http.closed()
        super().connection_lost(exc)


def raise_file_limit(wanted: int) -> int:
    """Raise this process's open-file limit towards ``wanted`` (up to the hard limit); returns
    the limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft
