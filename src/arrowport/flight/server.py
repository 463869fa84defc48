"""Serving Arrow Flight: a gRPC server (``grpcio``) around :class:`FlightService`.

The Flight protocol is gRPC with Arrow IPC messages inside; speaking it with ``grpcio`` directly
(rather than through pyarrow's Flight server) lets every frame be checked before pyarrow decodes
anything, every error carry its proper gRPC status, and the server's limits be set: at most
``flight.max_concurrent_calls`` calls at once (UNAVAILABLE ``overloaded`` beyond, see
:mod:`arrowport.flight.call_limit`), frames of at most ``limits.max_message_bytes`` plus room
for a wide schema.

It is ``grpcio``'s asyncio server, on an event loop of its own thread: ``DoPut`` runs on that
loop, so a small put costs no thread and its Python runs on one thread only (on the thread-pool
server, sixteen small puts meant sixteen threads taking the GIL in turns with the group
writer). The other calls are plain functions, run on the server's threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import structlog
import uvloop

from arrowport.config import Settings
from arrowport.flight.call_limit import backstop
from arrowport.flight.frames import SCHEMA_ROOM
from arrowport.flight.service import FlightService
from arrowport.services import Services

log = structlog.get_logger("arrowport.flight")


class FlightStartError(Exception):
    """The Flight endpoint cannot listen; the message says where and why."""


class ArrowportFlightServer:
    """A serving Flight endpoint; :meth:`close` stops it after running calls finish."""

    def __init__(
        self,
        server: grpc.aio.Server,
        port: int,
        service: FlightService,
        loop: asyncio.AbstractEventLoop,
        thread: threading.Thread,
    ) -> None:
        self._server = server
        self.port = port
        self._service = service
        self._loop = loop
        self._thread = thread
        self._closed = False
        self._close_lock = threading.Lock()

    def close(self, timeout: float = 30.0) -> bool:
        """Stop listening and wait up to ``timeout`` seconds for running calls (puts commit).

        Returns False when calls were still running at the deadline.
        """
        with self._close_lock:
            if self._closed:
                return True
            self._closed = True
        started = time.monotonic()
        stopping = asyncio.run_coroutine_threadsafe(self._server.stop(timeout), self._loop)
        with contextlib.suppress(TimeoutError):
            stopping.result(timeout + 5)
        # gRPC cancels the calls still running at the deadline; it does not say whether any was.
        stopped = time.monotonic() - started < timeout
        if not stopped:
            log.warning("flight calls still running at shutdown", timeout_s=timeout)
        # Steps still on threads are not waited for: a put reading its frames through the loop
        # ends truncated once the loop has stopped, and the ingest service waits for writes.
        self._service.close()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        return stopped


def flight_location(host: str, port: int, tls: bool = False) -> str:
    """``grpc://host:port`` (``grpc+tls://`` with ``tls``), with an IPv6 address in brackets."""
    scheme = "grpc+tls" if tls else "grpc"
    return f"{scheme}://{_address(host, port)}"


def _address(host: str, port: int) -> str:
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


def _credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """The HTTP side's certificate chain and key (None: plain gRPC)."""
    tls = settings.tls
    if tls.cert_file is None or tls.key_file is None:
        return None
    pair: list[bytes] = []
    for key, path in (("tls.key_file", tls.key_file), ("tls.cert_file", tls.cert_file)):
        try:
            with open(path, "rb") as pem:
                pair.append(pem.read())
        except OSError as exc:
            raise FlightStartError(
                f"cannot serve Arrow Flight over TLS: {key}: {exc.strerror or exc} ({path})"
            ) from None
    return grpc.ssl_server_credentials([(pair[0], pair[1])])


def _bind_problem(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be bound, if a plain socket can tell (gRPC only says it failed)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        return f"cannot resolve {host!r}: {exc.strerror or exc}"
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        try:
            probe.bind(address)
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def start_flight_server(services: Services, shared_port: bool = False) -> ArrowportFlightServer:
    """Listen on ``flight.host`` (default: ``api.host``) and ``flight.port``; serving starts now.

    With ``tls`` configured the endpoint is ``grpc+tls://`` with the HTTP side's certificate;
    with ``shared_port`` other workers listen on the same port.
    """
    settings = services.settings
    host = settings.flight.host or settings.api.host
    port = settings.flight.port
    credentials = _credentials(settings)
    # Arrowport's own limit refuses past flight.max_concurrent_calls; gRPC's only past that
    # and the refusals being sent. (Every handler runs on the event loop or on the Flight
    # service's own threads: gRPC's thread pool is there for a plain handler, and none is.)
    calls = backstop(settings.flight.max_concurrent_calls)
    # A put's frame carries an IPC message; another call's request, a query (see
    # arrowport.flight.single_request, which holds those to their own limit).
    limits = settings.limits
    receive_limit = max(limits.max_message_bytes, limits.max_query_body_bytes) + SCHEMA_ROOM
    options: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", receive_limit),
        ("grpc.max_send_message_length", -1),
        # No gRPC message compression (identity only; a gzip'd call is UNIMPLEMENTED): a few
        # hundred KB of gzip made the server inflate and parse up to the receive limit, and
        # bytes that cost the client nothing counted toward a put's minimum rate. Arrow's own
        # buffer compression (IPC zstd or lz4) is read as over HTTP.
        ("grpc.compression_enabled_algorithms_bitset", 1),
        # Without this, a port another process already serves would be shared silently.
        ("grpc.so_reuseport", 1 if shared_port else 0),
        # A fixed window: gRPC's bandwidth-delay probe grows it while DuckDB is busy, and a
        # fast client then has that much more of its upload queued in this process's memory.
        ("grpc.http2.bdp_probe", 0),
        ("grpc.http2.lookahead_bytes", settings.flight.receive_window_bytes),
    ]
    service = FlightService(services)
    # uvloop, as for HTTP: a small put costs its loop less (gRPC hands every event of a call
    # to the loop from its poller thread), ~4% more puts a second from 16 clients.
    loop = uvloop.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="arrowport-flight-loop", daemon=True)
    thread.start()

    async def listen() -> tuple[grpc.aio.Server, int]:
        # gRPC's asyncio server belongs to the loop it is made on: this thread's own.
        server = grpc.aio.server(
            migration_thread_pool=ThreadPoolExecutor(calls, "arrowport-flight"),
            handlers=[service.handlers()],
            options=options,
            maximum_concurrent_rpcs=calls,
        )
        address = _address(host, port)
        try:
            if credentials is None:
                bound = server.add_insecure_port(address)
            else:
                bound = server.add_secure_port(address, credentials)
        except RuntimeError:
            bound = 0
        if bound:
            await server.start()
        return server, bound

    server, bound = asyncio.run_coroutine_threadsafe(listen(), loop).result()
    if not bound:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        service.close()
        reason = _bind_problem(host, port) or "gRPC could not listen there"
        raise FlightStartError(
            f"cannot serve Arrow Flight on {host}:{port}: {reason} "
            "(set flight.port / --flight-port, or flight.enabled: false)"
        )
    return ArrowportFlightServer(server, bound, service, loop, thread)
