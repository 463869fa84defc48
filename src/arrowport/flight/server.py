"""The Arrow Flight endpoint: a thin adapter over the same ingest service and read path as HTTP.

* ``do_put`` lands an upload in a table, one transaction per put. The handler drains the batches
  as they arrive while DuckDB writes them on another thread, with at most
  ``flight.upload_buffer_bytes`` waiting in memory (the rest in a temporary file, see
  :mod:`arrowport.flight.spool`); the put's metadata reply is the HTTP success body.
* ``do_get`` streams a table (ticket ``{"table": "t"}`` or just ``t``) or a read-only query
  (``{"sql": "...", "params": [...]}``).
* ``list_flights`` lists every table; ``get_flight_info`` / ``get_schema`` describe a table
  (descriptor path ``[table]``) or a query (descriptor command, same JSON as a ticket).
* With tokens configured every call needs ``authorization: Bearer <token>`` (or a Handshake with
  Basic credentials first) and the scope HTTP asks for the same thing: ``ingest`` (for the stream)
  to put, ``read`` to read (see :mod:`arrowport.flight.security`). With ``tls`` configured the
  endpoint is ``grpc+tls://``.

Example::

    client = pyarrow.flight.connect("grpc://127.0.0.1:8815")
    options = pyarrow.flight.FlightCallOptions(
        headers=[client.authenticate_basic_token("loader", token)]  # when tokens are configured
    )
    writer, reader = client.do_put(
        pyarrow.flight.FlightDescriptor.for_path("events"), schema, options=options
    )
    writer.write_table(table)
    writer.done_writing()
    reply = json.loads(reader.read().to_pybytes())  # {"status": "success", "rows_processed": ...}
    writer.close()
"""

from __future__ import annotations

import contextvars
import itertools
import json
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

import pyarrow as pa
import pyarrow.flight as flight
import structlog

from arrowport.auth import Principal
from arrowport.config import Scope, Settings
from arrowport.errors import InvalidIPC, InvalidOptions, TruncatedStream
from arrowport.flight.alignment import ALIGNED_POOL, aligned
from arrowport.flight.errors import Call, flight_errors
from arrowport.flight.requests import (
    ReadRequest,
    descriptor_request,
    producer_request,
    put_request,
    read_request,
)
from arrowport.flight.security import (
    MIDDLEWARE_KEY,
    AuthMiddlewareFactory,
    HandshakeAuthHandler,
    caller,
)
from arrowport.flight.spool import BatchSpool
from arrowport.ingest.service import (
    DeliveryRequest,
    IngestOptions,
    IngestResult,
    IngestService,
    measured,
)
from arrowport.memory import release_free_heap
from arrowport.storage.query import (
    QueryResult,
    describe_table,
    list_tables,
    query_schema,
    read_table,
    run_query,
    table_schema,
)

log = structlog.get_logger("arrowport.flight")

# Uploaded bytes between two releases of the heap's free pages (see release_free_heap).
TRIM_EVERY_BYTES = 128 * 1024**2


class FlightStartError(Exception):
    """The Flight endpoint cannot listen; the message says where and why."""


class ArrowportFlightServer(flight.FlightServerBase):  # type: ignore[misc]
    """Serves as soon as it is constructed; :meth:`close` stops it after running calls finish."""

    def __init__(
        self,
        location: str,
        service: IngestService,
        tls_certificates: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        # Set before the base class starts serving: handlers may run at once.
        self._service = service
        self._metrics = service.metrics
        self._closed = False
        self._close_lock = threading.Lock()
        super().__init__(
            location,
            auth_handler=HandshakeAuthHandler(),
            tls_certificates=tls_certificates or [],
            middleware={
                MIDDLEWARE_KEY: AuthMiddlewareFactory(service.settings.auth, self._metrics)
            },
        )

    @staticmethod
    def _caller(
        context: flight.ServerCallContext, call: Call, scope: Scope | None = None
    ) -> Principal:
        """The authenticated caller, checked for ``scope`` (``None``: any valid token)."""
        principal = caller(context)
        if not principal.anonymous:
            call.token = principal.name
        if scope is not None:
            principal.require(scope)
        return principal

    # -- ingest --------------------------------------------------------------------------------

    def do_put(
        self,
        context: flight.ServerCallContext,
        descriptor: flight.FlightDescriptor,
        reader: flight.MetadataRecordBatchReader,
        writer: flight.FlightMetadataWriter,
    ) -> None:
        with flight_errors(self._metrics, "do_put") as call:
            principal = self._caller(context, call)
            request = put_request(descriptor)
            call.stream = request.stream
            principal.require("ingest", stream=request.stream)
            options = self._service.resolve(
                request.stream,
                table=request.table,
                mode=request.mode,
                chunk_size=request.chunk_size,
                key_columns=request.key_columns,
                schema_policy=request.schema_policy,
                duplicate_keys=request.duplicate_keys,
                dry_run=request.dry_run,
            )
            # Without this, a token limited to one stream could name any target table.
            principal.require_table(
                options.stream, options.table, self._service.stream_table(options.stream)
            )
            self._service.check_accepting()
            schema = _upload_schema(reader)
            # Checked as the batches arrive: a put waiting on DuckDB must not fill the spool's disk.
            limit = self._service.settings.limits.max_body_bytes
            batches = measured(_incoming(reader, context), [0], limit)
            head, whole = _head(batches, self._service.settings.limits.small_body_bytes)
            if whole:  # a small upload, all here: written on this thread (and group-committed)
                result = self._service.ingest_batches(
                    options, schema, (aligned(b) for b in head), request.delivery
                )
            else:
                result = self._land(
                    options, schema, itertools.chain(head, batches), request.delivery
                )
            reply = result.to_json()
            try:
                writer.write(pa.py_buffer(json.dumps(reply).encode()))
            except (pa.ArrowException, OSError):
                # Committed already; only the acknowledgement is lost.
                log.info("flight client left before the reply", stream=request.stream)
            log.debug(
                "flight put committed",
                stream=request.stream,
                table=result.table,
                rows=result.rows,
                batches=result.batches,
            )

    def _land(
        self,
        options: IngestOptions,
        schema: pa.Schema,
        batches: Iterator[pa.RecordBatch],
        delivery: DeliveryRequest,
    ) -> IngestResult:
        """Drain ``batches`` into a spool on this thread while DuckDB writes them on another (see
        :mod:`arrowport.flight.spool`). Only this thread reads the upload: it must not be read
        once the handler has returned."""
        settings = self._service.settings.flight
        written: Future[IngestResult] = Future()
        with BatchSpool(
            schema, settings.upload_buffer_bytes, settings.spool_dir, aligned, ALIGNED_POOL
        ) as spool:
            run = contextvars.copy_context().run

            def write() -> None:
                try:
                    written.set_result(
                        run(self._service.ingest_batches, options, schema, iter(spool), delivery)
                    )
                except BaseException as exc:
                    written.set_exception(exc)

            writer = threading.Thread(target=write, name="arrowport-flight-put", daemon=True)
            writer.start()
            drained = 0
            try:
                for batch in batches:
                    if written.done():  # failed, or a duplicate delivery: its answer stands
                        break
                    spool.put(batch)
                    drained += batch.nbytes
                    if drained >= TRIM_EVERY_BYTES:
                        release_free_heap()
                        drained = 0
            except BaseException as exc:
                spool.fail(exc)
                writer.join()
                raise
            finally:
                self._metrics.spilled_batches.inc(spool.spilled_batches)
            spool.finish()
            writer.join()
        return written.result()

    # -- actions -------------------------------------------------------------------------------

    def list_actions(self, context: flight.ServerCallContext) -> list[tuple[str, str]]:
        with flight_errors(self._metrics, "list_actions") as call:
            self._caller(context, call)
        return [
            (
                "producer_offset",
                'Last committed sequence of a producer: body {"stream", "producer_id"}',
            )
        ]

    def do_action(
        self, context: flight.ServerCallContext, action: flight.Action
    ) -> Iterator[flight.Result]:
        with flight_errors(self._metrics, "do_action") as call:
            principal = self._caller(context, call)
            if action.type != "producer_offset":
                raise InvalidOptions(
                    f"unknown action {action.type!r}; list_actions tells the known ones"
                )
            request = producer_request(action.body.to_pybytes() if action.body else b"")
            call.stream = request.stream
            # A stream's delivery state: its producers may see it, and so may readers (as HTTP).
            if not principal.allows("ingest", stream=request.stream):
                principal.require("read")
            last = self._service.last_sequence(request.stream, request.producer_id)
            answer = {
                "stream": request.stream,
                "producer_id": request.producer_id,
                "last_sequence": last,
                "next_sequence": None if last is None else last + 1,
            }
            return iter([flight.Result(json.dumps(answer).encode())])

    # -- reads ---------------------------------------------------------------------------------

    def do_get(
        self, context: flight.ServerCallContext, ticket: flight.Ticket
    ) -> flight.FlightDataStream:
        with flight_errors(self._metrics, "do_get") as call:
            self._caller(context, call, "read")
            result = self._open(read_request(ticket.ticket))
            return flight.GeneratorStream(result.schema, self._stream(result))

    def _stream(self, result: QueryResult) -> Iterator[pa.RecordBatch]:
        with flight_errors(self._metrics, "do_get"):
            yield from result  # closes the query's cursor when done or abandoned

    def list_flights(
        self, context: flight.ServerCallContext, criteria: bytes
    ) -> list[flight.FlightInfo]:
        with flight_errors(self._metrics, "list_flights") as call:
            self._caller(context, call, "read")
            return [self._info(ReadRequest(table=t.name)) for t in list_tables(self._service.db)]

    def get_flight_info(
        self, context: flight.ServerCallContext, descriptor: flight.FlightDescriptor
    ) -> flight.FlightInfo:
        with flight_errors(self._metrics, "get_flight_info") as call:
            self._caller(context, call, "read")
            return self._info(descriptor_request(descriptor))

    def get_schema(
        self, context: flight.ServerCallContext, descriptor: flight.FlightDescriptor
    ) -> flight.SchemaResult:
        error: flight.FlightError | None = None
        try:
            with flight_errors(self._metrics, "get_schema") as call:
                self._caller(context, call, "read")
                return flight.SchemaResult(self._schema(descriptor_request(descriptor)))
        except flight.FlightError as exc:
            error = exc
        # pyarrow's get_schema callback (unlike the others) does not turn a FlightError into a
        # clean status: the client receives this frame's traceback. Keep it to this one frame.
        raise error.with_traceback(None)

    def _open(self, request: ReadRequest) -> QueryResult:
        db = self._service.db
        if request.table is not None:
            return read_table(db, request.table)
        assert request.sql is not None
        return run_query(db, request.sql, request.params)

    def _schema(self, request: ReadRequest) -> pa.Schema:
        # Planned, not run: describing a query must not cost the query.
        db = self._service.db
        if request.table is not None:
            return table_schema(db, request.table)
        assert request.sql is not None
        return query_schema(db, request.sql, request.params)

    def _info(self, request: ReadRequest) -> flight.FlightInfo:
        records = -1
        if request.table is not None:
            info = describe_table(self._service.db, request.table)
            request = ReadRequest(table=info.name)
            records = info.row_count
            descriptor = flight.FlightDescriptor.for_path(info.name)
        else:
            descriptor = flight.FlightDescriptor.for_command(request.ticket().ticket)
        # No locations: the data is fetched from this same server.
        endpoint = flight.FlightEndpoint(request.ticket(), [])
        return flight.FlightInfo(self._schema(request), descriptor, [endpoint], records, -1)

    # -- lifecycle -----------------------------------------------------------------------------

    def close(self, timeout: float = 30.0) -> bool:
        """Stop listening and wait up to ``timeout`` seconds for running calls (puts commit).

        Returns False when calls were still running at the deadline.
        """
        with self._close_lock:
            if self._closed:
                return True
            self._closed = True
        stopper = threading.Thread(target=self.shutdown, name="arrowport-flight-stop", daemon=True)
        stopper.start()
        stopper.join(timeout)
        if stopper.is_alive():
            log.warning("flight calls still running at shutdown", timeout_s=timeout)
            return False
        return True


def _upload_schema(reader: flight.MetadataRecordBatchReader) -> pa.Schema:
    try:
        return reader.schema
    except (pa.ArrowException, OSError) as exc:
        raise InvalidIPC(f"cannot read the upload's Arrow schema: {exc}") from None


def _incoming(
    reader: flight.MetadataRecordBatchReader, context: flight.ServerCallContext
) -> Iterator[pa.RecordBatch]:
    """The upload's batches as they arrive (gRPC may leave their buffers misaligned)."""
    while True:
        try:
            chunk = reader.read_chunk()
        except StopIteration:
            break
        except (pa.ArrowException, OSError) as exc:
            if context.is_cancelled():
                raise TruncatedStream(
                    "the client cancelled the upload; nothing was written"
                ) from None
            raise InvalidIPC(f"cannot read the uploaded Arrow data: {exc}") from None
        if chunk.data is not None:  # a message may carry only application metadata
            yield chunk.data
    if context.is_cancelled():
        # A cancelled call can look like a finished upload; never commit half of one.
        raise TruncatedStream("the client cancelled the upload; nothing was written")


def _head(batches: Iterator[pa.RecordBatch], limit: int) -> tuple[list[pa.RecordBatch], bool]:
    """The first batches, up to the one that passes ``limit`` bytes, and whether that was all."""
    head: list[pa.RecordBatch] = []
    size = 0
    for batch in batches:
        head.append(batch)
        size += batch.nbytes
        if size > limit:
            return head, False
    return head, True


def flight_location(host: str, port: int, tls: bool = False) -> str:
    """``grpc://host:port`` (``grpc+tls://`` with ``tls``), with an IPv6 address in brackets."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    scheme = "grpc+tls" if tls else "grpc"
    return f"{scheme}://{host}:{port}"


def _tls_certificates(settings: Settings) -> list[tuple[bytes, bytes]] | None:
    """The PEM certificate chain and key of ``tls`` (None: plain gRPC)."""
    tls = settings.tls
    if tls.cert_file is None or tls.key_file is None:
        return None
    pair: list[bytes] = []
    for key, path in (("tls.cert_file", tls.cert_file), ("tls.key_file", tls.key_file)):
        try:
            with open(path, "rb") as pem:
                pair.append(pem.read())
        except OSError as exc:
            raise FlightStartError(
                f"cannot serve Arrow Flight over TLS: {key}: {exc.strerror or exc} ({path})"
            ) from None
    return [(pair[0], pair[1])]


def _bind_problem(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be bound, if a plain socket can tell (gRPC only says it failed)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        return f"cannot resolve {host!r}: {exc.strerror or exc}"
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def start_flight_server(settings: Settings, service: IngestService) -> ArrowportFlightServer:
    """Listen on ``flight.host`` (default: ``api.host``) and ``flight.port``; serving starts now.

    With ``tls`` configured the endpoint is ``grpc+tls://`` with the HTTP side's certificate.
    """
    host = settings.flight.host or settings.api.host
    port = settings.flight.port
    certificates = _tls_certificates(settings)
    location = flight_location(host, port, tls=certificates is not None)
    try:
        return ArrowportFlightServer(location, service, tls_certificates=certificates)
    except (pa.ArrowException, OSError) as exc:
        reason: Any = _bind_problem(host, port) or exc
        raise FlightStartError(
            f"cannot serve Arrow Flight on {host}:{port}: {reason} "
            "(set flight.port / --flight-port, or flight.enabled: false)"
        ) from None
