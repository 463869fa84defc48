"""Running the server: DuckDB, the ingest service and the HTTP app, in one process."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from types import FrameType
from typing import Any

import structlog
import uvicorn
from prometheus_client import start_http_server

from arrowport import workers
from arrowport.api.app import create_app
from arrowport.api.connections import protocol_class, raise_file_limit, tls_protocol_class
from arrowport.auth import auth_enabled, exposed_hosts, exposure_refusal
from arrowport.config import Settings, TlsSettings
from arrowport.errors import StorageError
from arrowport.flight import ArrowportFlightServer, FlightStartError, start_flight_server
from arrowport.logs import configure_logging, lifecycle
from arrowport.memory import keep_memory_flat
from arrowport.metrics import Metrics, Readings
from arrowport.services import Services
from arrowport.storage.database import size_problem
from arrowport.storage.open import open_storage
from arrowport.tls_certificate import validity, validity_warning

log = structlog.get_logger("arrowport")


class _Server(uvicorn.Server):
    """Announces the bound port once listening (``--port 0`` picks a free one)."""

    def __init__(
        self,
        config: uvicorn.Config,
        announce: dict[str, Any],
        on_exit: Callable[[], None],
        worker: int | None = None,
    ) -> None:
        super().__init__(config)
        self._announce = announce
        self._on_exit = on_exit
        self._worker = worker

    flight: ArrowportFlightServer | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # A hang-up (the terminal closed, a service manager's reload) drains as SIGTERM does,
        # rather than kill the process with writes half done.
        if threading.current_thread() is not threading.main_thread():
            with super().capture_signals():
                yield
            return
        previous = signal.signal(
            signal.SIGHUP, lambda _, frame: self.handle_exit(signal.SIGTERM, frame)
        )
        try:
            with super().capture_signals():
                yield
        finally:
            signal.signal(signal.SIGHUP, previous)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Flight puts still running commit before the HTTP side closes the ingest service.
        # HTTP requests keep running meanwhile, so they get what is left of the same deadline:
        # limits.shutdown_timeout_seconds bounds the whole shutdown, not each side of it.
        if self.flight is not None:
            configured = self.config.timeout_graceful_shutdown
            timeout = 30 if configured is None else configured
            started = time.monotonic()
            await asyncio.to_thread(self.flight.close, timeout)
            left = timeout - (time.monotonic() - started)
            self.config.timeout_graceful_shutdown = max(0, math.ceil(left))
        await super().shutdown(sockets)

    tls_inside = False

    def _log_started_message(self, listeners: Sequence[socket.SocketType]) -> None:
        # With TLS uvicorn would say http:// (its config has no ssl left, see startup); the
        # "arrowport ready" line says the port and whether TLS is on.
        if not self.tls_inside:
            super()._log_started_message(listeners)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # New writes get 503 from now on; requests already running finish and are answered.
        self._on_exit()
        super().handle_exit(sig, frame)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        context = self.config.ssl
        if context is not None:
            # TLS is done inside the connection guard, so that a connection counts against
            # api.max_connections and has its deadline from the TCP accept, not from the end of
            # its handshake: the listener itself is created without ssl=.
            self.config.ssl = None
            self.tls_inside = True
            self.config.http_protocol_class = tls_protocol_class(  # type: ignore[assignment]
                self.config.http_protocol_class, context
            )
        await super().startup(sockets)
        if self.should_exit:
            return
        port = self.servers[0].sockets[0].getsockname()[1] if self.servers else None
        if self._worker is None:
            lifecycle().info("arrowport ready", http_port=port, **self._announce)
        else:
            # The supervisor says "ready" once every worker is.
            lifecycle().info("arrowport worker ready", worker=self._worker, http_port=port)
            workers.report_ready()


def _tls_problem(tls: TlsSettings) -> str | None:
    if tls.cert_file is None or tls.key_file is None:
        return None
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
            tls.cert_file, tls.key_file
        )
    except OSError as exc:  # ssl.SSLError included
        reason = getattr(exc, "reason", None) or exc.strerror or str(exc)
        return f"tls.cert_file / tls.key_file: cannot load the certificate and key ({reason})"
    return None


def _open_metrics_port(settings: Settings) -> str | None:
    """The extra metrics listener has no authentication: with tokens, say it is meant."""
    api = settings.api
    if (
        api.enable_metrics
        and api.metrics_port is not None
        and auth_enabled(settings.auth)
        and not settings.auth.public_metrics
    ):
        return (
            "api.metrics_port serves metrics without authentication while auth.tokens are "
            "configured: set auth.public_metrics: true to allow it, or unset api.metrics_port"
        )
    return None


def _check_access(settings: Settings) -> str | None:
    """One line saying why the server must not start (None: it may), after a loud warning
    when it will serve a non-loopback address without authentication, or a certificate near
    or past its end. A worker leaves the warnings to its supervisor, which said them once."""
    problem = (
        exposure_refusal(settings) or _tls_problem(settings.tls) or _open_metrics_port(settings)
    )
    if problem is not None or workers.worker_index() is not None:
        return problem
    if settings.tls.cert_file is not None:
        warning = validity_warning(settings.tls.cert_file)
        if warning is not None:
            log.warning(warning)
    if exposed_hosts(settings):
        log.warning(
            "AUTHENTICATION IS OFF on a non-loopback address: anyone who can connect may read "
            "and write every table (auth.allow_unauthenticated); configure auth.tokens to fix",
            hosts=exposed_hosts(settings),
        )
    return None


def _listening_socket(host: str, port: int, shared: bool) -> socket.socket:
    """The HTTP API's listening socket, bound here rather than by uvicorn so that a port that
    cannot be had stops start-up with one line. ``shared``: other workers bind it too (the
    kernel spreads connections)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if shared:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def serve(settings: Settings) -> int:
    configure_logging(settings.logging)
    problem = _check_access(settings) or workers.refusal(settings) or size_problem(settings.duckdb)
    if problem is not None:
        print(f"arrowport: {problem}", file=sys.stderr)
        return 2
    if settings.api.workers > 1:
        return workers.supervise(settings)
    worker = workers.worker_index()
    shared = worker is not None
    index = worker or 0
    # Over a file-size limit, fail the write (and answer 507) instead of being killed.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    keep_memory_flat()
    metrics = Metrics()
    try:
        storage = open_storage(settings)
    except StorageError as exc:
        print(f"arrowport: {exc.message}", file=sys.stderr)
        return 1
    services = Services.open(settings, storage, metrics)
    admission = services.ingest.admission
    reads = services.reads
    metrics.watch(
        Readings(
            database_size=storage.size_bytes,
            queued_writes=lambda: services.ingest.queued_writes,
            inflight_bytes=lambda: admission.inflight_bytes,
            streaming_writes=lambda: admission.streaming,
            queries_running=lambda: reads.queries_running,
            queries_waiting=lambda: reads.queries_waiting,
            storage_stats=storage.stats,
        )
    )
    period = validity(settings.tls.cert_file) if settings.tls.cert_file is not None else None
    if period is not None:
        metrics.certificate_expires(period[1].timestamp())
    app = create_app(services)
    announce: dict[str, Any] = {
        "storage": storage.target,
        "database": settings.duckdb.path if storage.target == "duckdb" else "lake",
        "tls": settings.tls.enabled,
        "auth": auth_enabled(settings.auth),
    }
    api = settings.api
    if api.enable_metrics and api.metrics_port is not None:
        port = api.metrics_port + index if api.metrics_port else 0
        try:
            metrics_server, _ = start_http_server(port, addr=api.host, registry=metrics.registry)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            print(
                f"arrowport: cannot serve metrics on {api.host}:{port}: {reason}", file=sys.stderr
            )
            services.close()
            return 1
        announce["metrics_port"] = metrics_server.server_port
    try:
        http_socket = _listening_socket(api.host, api.port, shared)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        print(f"arrowport: cannot serve HTTP on {api.host}:{api.port}: {reason}", file=sys.stderr)
        services.close()
        return 1
    flight_server = None
    if settings.flight.enabled:
        try:
            flight_server = start_flight_server(services, shared_port=shared)
        except FlightStartError as exc:
            print(f"arrowport: {exc}", file=sys.stderr)
            http_socket.close()
            services.close()
            return 1
        announce["flight_port"] = flight_server.port
    # Room for every allowed connection, Flight's, the database's files and some to spare.
    raise_file_limit(api.max_connections + settings.flight.max_concurrent_calls + 256)
    config = uvicorn.Config(
        app,
        host=api.host,
        port=api.port,
        loop="uvloop",
        http=protocol_class(
            api.header_timeout_seconds, api.max_connections, api.max_header_bytes, metrics
        ),
        lifespan="on",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=math.ceil(settings.limits.shutdown_timeout_seconds),
        ssl_certfile=settings.tls.cert_file,
        ssl_keyfile=settings.tls.key_file,
    )
    server = _Server(config, announce, services.ingest.admission.drain, worker)
    server.flight = flight_server
    # uvicorn re-raises the stop signal after its graceful shutdown; a handler of our own makes
    # that a no-op, so a SIGTERM-ed server exits 0 once everything is committed.
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, lambda *_: None)
    try:
        server.run(sockets=[http_socket])
    finally:
        if flight_server is not None:
            # A second Ctrl-C (a forced exit) does not wait for Flight calls either.
            flight_server.close(
                0 if server.force_exit else settings.limits.shutdown_timeout_seconds
            )
    if not server.started:
        services.close()
        return 1
    if server.force_exit:
        # A second Ctrl-C: the drain was cut short, and what was running got no answer
        # (committed writes are in the database's log, replayed when it next opens). Exit
        # now: a query still running would otherwise hold the exit until it ended.
        log.warning("arrowport stopped before its drain finished (a second interrupt)")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)
    lifecycle().info("arrowport stopped")
    return 0
