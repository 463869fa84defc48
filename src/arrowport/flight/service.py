"""The Arrow Flight service: a thin adapter over the same ingest service and read path as HTTP.

* ``DoPut`` lands an upload in a table, one transaction per put. The frames' IPC messages are
  checked as they arrive and go through the same decoder as an HTTP body; a small put (all of it
  within ``limits.small_body_bytes``) is group-committed, a larger one is read while DuckDB
  writes it on another thread (see :mod:`arrowport.flight.puts`). The reply
  (``PutResult.app_metadata``) is the HTTP success body.
* ``DoGet`` streams a table (ticket ``{"table": "t"}`` or just ``t``) or a read-only query
  (``{"sql": "...", "params": [...]}``).
* ``ListFlights`` lists every table; ``GetFlightInfo`` / ``GetSchema`` describe a table
  (descriptor path ``[table]``) or a query (descriptor command, same JSON as a ticket).
* ``DoAction`` ``producer_offset``: the last committed sequence of a producer; ``CloseSession``
  (Flight's, sent by the ADBC driver as a connection closes): CLOSED, as nothing is kept per
  session.
* ``DoExchange`` and ``PollFlightInfo``: UNIMPLEMENTED ``not_implemented``, as any refusal.
* Flight SQL (the ADBC drivers' protocol) on the same calls: a descriptor command, ticket or
  action that is Flight SQL's (a ``google.protobuf.Any`` of one of its messages) goes to
  :mod:`arrowport.flight.sql`; a put there lands through the same put flow as these.
* With tokens configured every call needs ``authorization: Bearer <token>`` (or a Handshake with
  Basic credentials first) and the scope HTTP asks for the same thing: ``ingest`` (for the
  stream) to put, ``read`` to read.

Example::

    client = pyarrow.flight.connect("grpc://127.0.0.1:8815")
    writer, reader = client.do_put(
        pyarrow.flight.FlightDescriptor.for_path("events"), table.schema
    )
    writer.write_table(table)
    writer.done_writing()
    reply = json.loads(reader.read().to_pybytes())  # {"status": "success", "rows_processed": ...}
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Iterator,
)
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import grpc
import pyarrow as pa
import structlog
from google.protobuf.message import DecodeError
from google.protobuf.message import Message as ProtoMessage

from arrowport.auth import Principal
from arrowport.config import Scope
from arrowport.errors import InvalidOptions, NotImplementedFeature, RequestTimeout, shown
from arrowport.flight.arrival import CANCEL_GRACE_SECONDS, Arrival
from arrowport.flight.call_limit import CallLimit
from arrowport.flight.errors import Call, flight_errors, flight_errors_async
from arrowport.flight.frames import SCHEMA_ROOM, Frame, encode_stream
from arrowport.flight.protocol import flight_pb2
from arrowport.flight.puts import PutCall, PutLanding, bridged
from arrowport.flight.requests import (
    ReadRequest,
    check_put_headers,
    descriptor_request,
    producer_request,
    put_request,
    read_request,
)
from arrowport.flight.security import AnyContext, caller, handshake
from arrowport.flight.single_request import SingleRequest
from arrowport.flight.sql import ACTIONS, UNSERVED_ACTIONS, FlightSql, is_wrapped
from arrowport.flight.threaded import Streaming, ThreadContext, Unary, on_threads, streamed
from arrowport.ingest.streams import IngestOptions
from arrowport.options import IngestReply
from arrowport.reads import answer_batches, result_write_options
from arrowport.services import Services
from arrowport.storage.query import QueryResult
from arrowport.storage.query_stop import QueryStop

log = structlog.get_logger("arrowport.flight")

SERVICE_NAME = "arrow.flight.protocol.FlightService"
_ACTIONS = {
    "producer_offset": 'Last committed sequence of a producer: body {"stream", "producer_id"}',
    "CloseSession": "Flight: close the client's session (CLOSED; the server keeps none)",
    **ACTIONS,
}

# A put whose stream ends before its first frame names no table, schema or command: nothing
# can be written, created or answered for it. This is what the ADBC Flight SQL driver sends for
# ``adbc_ingest`` of a stream of no record batches (a zero-row table), in every mode: it
# attaches the descriptor to the schema message, which its writer sends only with the first
# batch.
NO_FRAMES = (
    "the put carried no data and no descriptor (its stream ended before a first frame), so "
    "there is no table or command to act on; an ADBC adbc_ingest of zero rows sends exactly "
    "this: to create a table with no rows or append none, ingest a zero-row RecordBatch "
    "(pyarrow.RecordBatch.from_pylist([], schema=...)), which carries its descriptor and schema"
)

DO_EXCHANGE = (
    "DoExchange is not served by this server: send data with DoPut (one transaction per put) and "
    "read it with DoGet"
)
POLL_FLIGHT_INFO = (
    "PollFlightInfo is not served by this server: use GetFlightInfo (a Flight SQL query runs as it "
    "is asked for, and its answer waits for the ticket's DoGet)"
)

P = TypeVar("P", bound=ProtoMessage)


def parse(kind: type[P], raw: bytes, what: str) -> P:
    """A request message (INVALID_ARGUMENT if the bytes are not one)."""
    try:
        return kind.FromString(raw)
    except (DecodeError, ValueError):
        raise InvalidOptions(f"{what} is not a valid protobuf message") from None


def client_of(principal: Principal) -> str | None:
    """Who counts as one client for per-client limits: the token (none without
    authentication, where every caller is the same anonymous one)."""
    return None if principal.anonymous else principal.name


class FlightService:
    def __init__(self, services: Services) -> None:
        self._services = services
        self._ingest = services.ingest
        self._reads = services.reads
        self._settings = services.settings
        self._metrics = services.metrics
        self._sql = FlightSql(services)
        self._puts = PutLanding(services)
        flight = services.settings.flight
        self._calls = CallLimit(
            flight.max_concurrent_calls, self._metrics, flight.max_concurrent_calls_per_client
        )
        # Where streamed answers are made, and puts that are not group-committed are written:
        # a step of every call admitted (flight.max_concurrent_calls), beside the queries whose
        # callers have gone (they still hold a thread while they wait for their turn, or run
        # until their first answer).
        limits = services.settings.limits
        self._threads = ThreadPoolExecutor(
            services.settings.flight.max_concurrent_calls
            + limits.max_concurrent_queries
            + limits.max_queued_queries,
            "arrowport-flight-call",
        )

    def close(self) -> None:
        """Give back what Flight SQL clients hold (transactions, statements, answers). Steps
        still running finish on their own; puts still reading frames end truncated."""
        self._threads.shutdown(wait=False, cancel_futures=True)
        self._sql.close()

    def handlers(self) -> grpc.GenericRpcHandler:
        """Every call's handler, each counted against ``flight.max_concurrent_calls``."""
        limit = self._calls

        def same(data: bytes) -> bytes:
            return data

        stall = self._settings.limits.body_timeout_seconds
        # Calls of one request message are read as streams: admitted and authenticated before
        # gRPC reads that message (see arrowport.flight.single_request).
        largest = self._settings.limits.max_query_body_bytes + SCHEMA_ROOM
        single = SingleRequest(self._settings.auth, self._metrics, stall, largest, limit)

        def unary_stream(method: str, handler: Streaming) -> grpc.RpcMethodHandler[bytes, bytes]:
            return grpc.stream_stream_rpc_method_handler(
                limit.coroutine(
                    method, single.reading(method, streamed(handler, self._threads, stall))
                ),
                request_deserializer=same,
                response_serializer=same,
            )

        def unary_unary(method: str, handler: Unary) -> grpc.RpcMethodHandler[bytes, bytes]:
            return grpc.stream_unary_rpc_method_handler(
                limit.coroutine(method, single.reading(method, on_threads(handler, self._threads))),
                request_deserializer=same,
                response_serializer=same,
            )

        def stream_stream(counted: Callable[..., Any]) -> grpc.RpcMethodHandler[bytes, bytes]:
            return grpc.stream_stream_rpc_method_handler(
                counted, request_deserializer=same, response_serializer=same
            )

        return grpc.method_handlers_generic_handler(
            SERVICE_NAME,
            {
                "Handshake": stream_stream(limit.coroutine("handshake", self.handshake)),
                "ListFlights": unary_stream("list_flights", self.list_flights),
                "GetFlightInfo": unary_unary("get_flight_info", self.get_flight_info),
                "GetSchema": unary_unary("get_schema", self.get_schema),
                "DoGet": unary_stream("do_get", self.do_get),
                "DoPut": stream_stream(limit.stream("do_put", self.do_put)),
                "DoAction": unary_stream("do_action", self.do_action),
                "ListActions": unary_stream("list_actions", self.list_actions),
                # Not served, but answered as any refusal (gRPC's own answer to a method it
                # has no handler for, "Method not found!", carries no code of Arrowport's).
                "DoExchange": stream_stream(
                    limit.coroutine("do_exchange", self.unserved("do_exchange", DO_EXCHANGE))
                ),
                "PollFlightInfo": grpc.stream_unary_rpc_method_handler(
                    limit.coroutine(
                        "poll_flight_info", self.unserved("poll_flight_info", POLL_FLIGHT_INFO)
                    ),
                    request_deserializer=same,
                    response_serializer=same,
                ),
            },
        )

    def unserved(
        self, method: str, why: str
    ) -> Callable[[AsyncIterator[bytes], grpc.aio.ServicerContext[bytes, bytes]], Awaitable[None]]:
        """A handler that refuses its calls UNIMPLEMENTED ``not_implemented: why`` once the
        caller's token is checked, without reading what they send."""

        async def refuse(
            requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[bytes, bytes]
        ) -> None:
            async with flight_errors_async(self._metrics, method, context) as call:
                self._caller(context, call)
                raise NotImplementedFeature(why)

        return refuse

    def _caller(self, context: AnyContext, call: Call, scope: Scope | None = None) -> Principal:
        """The authenticated caller, checked for ``scope`` (``None``: any valid token)."""
        principal = caller(context, self._settings.auth)
        if not principal.anonymous:
            call.token = principal.name
        if scope is not None:
            principal.require(scope)
        return principal

    # -- handshake -----------------------------------------------------------------------------

    async def handshake(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> None:
        # On the event loop, reading the client's messages (which carry nothing used here, and
        # are each answered with an empty one) within the stall timeout: a Handshake never sent
        # to its end does not hold a call.
        async with flight_errors_async(self._metrics, "handshake", context) as call:
            principal, bearer = handshake(context, self._settings.auth)
            if not principal.anonymous:
                call.token = principal.name
            if bearer is not None:
                await context.send_initial_metadata((("authorization", bearer),))
            limits = self._settings.limits
            arrival = Arrival(
                requests,
                limits.body_timeout_seconds,
                "the handshake",
                "it was ended",
                limits.min_body_bytes_per_second,
            )
            try:
                while await arrival.next() is not None:
                    await _answer_handshake(context, limits.body_timeout_seconds)
                # A cancelled call's stream ends as a finished one; its cancellation comes next.
                await asyncio.sleep(CANCEL_GRACE_SECONDS)
            finally:
                arrival.close()

    # -- ingest --------------------------------------------------------------------------------

    async def do_put(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> AsyncGenerator[bytes, None]:
        # On the server's event loop (the other calls run on its threads): a small put is
        # received and group-committed without a thread of its own.
        limits = self._settings.limits
        watched = PutCall(requests, limits.body_timeout_seconds, limits.min_body_bytes_per_second)
        held = contextlib.ExitStack()  # the caller's call slot, until the put is answered
        try:
            async with flight_errors_async(self._metrics, "do_put", context) as call:
                started = time.perf_counter()
                principal = self._caller(context, call)
                held.enter_context(self._calls.client(client_of(principal)))
                first = await watched.frame()
                if first is None:
                    raise InvalidOptions(NO_FRAMES)
                if first.descriptor is None:
                    raise InvalidOptions("a put's first frame must carry its flight descriptor")
                client = client_of(principal)
                gone = watched.gone

                if _is_sql(first.descriptor):
                    loop = asyncio.get_running_loop()
                    headers = _text_metadata(context)
                    watched.writes = False  # unless it is a bulk ingestion

                    def put(options: IngestOptions, everything: Iterator[Frame]) -> IngestReply:
                        call.stream = options.stream
                        watched.writes = True  # before the rest of its frames are read
                        return self._puts.land(options, everything, client, gone, started)

                    def answer() -> list[bytes]:
                        rest = bridged(watched.frame, loop)
                        return list(self._sql.do_put(first, rest, principal, headers, put))

                    run = contextvars.copy_context().run
                    for message in await loop.run_in_executor(self._threads, run, answer):
                        yield message
                    return
                request = put_request(first.descriptor)
                call.stream = request.stream
                check_put_headers(_text_metadata(context))
                options = self._ingest.streams.resolve(request, principal)
                reply = await self._puts.land_arriving(
                    options, first, watched.frame, client, gone, started, self._threads
                )
                body = json.dumps(reply.to_json()).encode()
                yield flight_pb2.PutResult(app_metadata=body).SerializeToString()
        except asyncio.CancelledError:
            watched.cancelled = True  # a write still queued or committing must not land
            raise
        finally:
            held.close()
            watched.close()

    # -- actions -------------------------------------------------------------------------------

    def list_actions(self, request: bytes, context: ThreadContext) -> Generator[bytes, None, None]:
        with flight_errors(self._metrics, "list_actions", context) as call:
            self._caller(context, call)
            for name, description in _ACTIONS.items():
                yield flight_pb2.ActionType(type=name, description=description).SerializeToString()

    def do_action(self, request: bytes, context: ThreadContext) -> Generator[bytes, None, None]:
        with flight_errors(self._metrics, "do_action", context) as call:
            principal = self._caller(context, call)
            action = parse(flight_pb2.Action, request, "the action")
            kind = action.type.decode("utf-8", errors="replace")
            if kind in ACTIONS or kind in UNSERVED_ACTIONS:
                yield from self._sql.do_action(kind, action.body, principal)
                return
            if kind == "CloseSession":
                # What the ADBC driver sends as a connection closes. The server keeps no session:
                # a client's transactions and statements are its token's, ended or dropped on
                # their own (see arrowport.flight.sql), so there is nothing to close.
                parse(flight_pb2.CloseSessionRequest, action.body, "the action body")
                closed = flight_pb2.CloseSessionResult(status=flight_pb2.CloseSessionResult.CLOSED)
                yield flight_pb2.Result(body=closed.SerializeToString()).SerializeToString()
                return
            if kind not in _ACTIONS:
                raise InvalidOptions(
                    f"unknown action {shown(kind)}; list_actions tells the known ones"
                )
            asked = producer_request(action.body)
            call.stream = asked.stream
            # A stream's delivery state: its producers may see it, and so may readers (as HTTP).
            if not principal.allows("ingest", stream=asked.stream):
                principal.require("read")
            last = self._ingest.last_sequence(asked.stream, asked.producer_id)
            answer = {
                "stream": asked.stream,
                "producer_id": asked.producer_id,
                "last_sequence": last,
                "next_sequence": None if last is None else last + 1,
            }
            yield flight_pb2.Result(body=json.dumps(answer).encode()).SerializeToString()

    # -- reads ---------------------------------------------------------------------------------

    def do_get(self, request: bytes, context: ThreadContext) -> Generator[bytes, None, None]:
        with flight_errors(self._metrics, "do_get", context) as call:
            # Flight SQL checks scopes itself: any valid token may ask what the server supports.
            principal = self._caller(context, call)
            ticket = parse(flight_pb2.Ticket, request, "the ticket")
            if is_wrapped(ticket.ticket):
                yield from self._sql.do_get(ticket.ticket, principal)
                return
            principal.require("read")
            limit = self._settings.limits.max_query_body_bytes
            result = self._open(read_request(ticket.ticket, limit), context.stop)
            with result:
                yield from self.stream_result(result)

    def stream_result(self, result: QueryResult) -> Iterator[bytes]:
        """A query's answer as DoGet frames, counted against ``limits.max_result_bytes``."""
        batches = answer_batches(iter(result), self._reads.budget())
        yield from encode_stream(
            result.schema, batches, result_write_options(self._settings.compression)
        )

    def list_flights(self, request: bytes, context: ThreadContext) -> Generator[bytes, None, None]:
        with flight_errors(self._metrics, "list_flights", context) as call:
            self._caller(context, call, "read")
            for table, schema in self._reads.table_schemas():
                yield _table_info(table.name, table.row_count, schema).SerializeToString()

    def get_flight_info(self, request: bytes, context: ThreadContext) -> bytes:
        with flight_errors(self._metrics, "get_flight_info", context) as call:
            principal = self._caller(context, call)
            descriptor = parse(flight_pb2.FlightDescriptor, request, "the flight descriptor")
            if _is_sql(descriptor):  # a query runs now: stopped if the call ends first
                info = self._sql.flight_info(descriptor, principal, context.stop)
                return info.SerializeToString()
            principal.require("read")
            limit = self._settings.limits.max_query_body_bytes
            asked = descriptor_request(descriptor, limit)
            return self._info(asked, context.stop).SerializeToString()
        raise AssertionError("unreachable")  # flight_errors ends the call on any error

    def get_schema(self, request: bytes, context: ThreadContext) -> bytes:
        with flight_errors(self._metrics, "get_schema", context) as call:
            principal = self._caller(context, call)
            descriptor = parse(flight_pb2.FlightDescriptor, request, "the flight descriptor")
            if _is_sql(descriptor):
                schema = self._sql.schema(descriptor, principal, context.stop)
            else:
                principal.require("read")
                limit = self._settings.limits.max_query_body_bytes
                schema = self._schema(descriptor_request(descriptor, limit), context.stop)
            return flight_pb2.SchemaResult(
                schema=schema.serialize().to_pybytes()
            ).SerializeToString()
        raise AssertionError("unreachable")

    def _open(self, request: ReadRequest, stop: QueryStop) -> QueryResult:
        if request.table is not None:
            return self._reads.read_table(request.table)  # a scan: each step is one batch
        assert request.sql is not None
        return self._reads.query(request.sql, request.params, stop)

    def _schema(self, request: ReadRequest, stop: QueryStop | None = None) -> pa.Schema:
        # Planned, not run: describing a query must not cost the query.
        if request.table is not None:
            return self._reads.table_schema(request.table)
        assert request.sql is not None
        return self._reads.query_schema(request.sql, request.params, stop)

    def _info(self, request: ReadRequest, stop: QueryStop | None = None) -> flight_pb2.FlightInfo:
        if request.table is not None:
            info = self._reads.table(request.table)
            schema = self._reads.table_schema(info.name)
            return _table_info(info.name, info.row_count, schema)
        descriptor = flight_pb2.FlightDescriptor(
            type=flight_pb2.FlightDescriptor.CMD, cmd=request.ticket()
        )
        return _flight_info(descriptor, request, self._schema(request, stop), -1)


# What a Handshake answers each message with: credentials come from the call's header only, so
# the reply carries none.
_HANDSHAKE_REPLY = flight_pb2.HandshakeResponse().SerializeToString()


async def _answer_handshake(
    context: grpc.aio.ServicerContext[bytes, bytes], stall_seconds: float
) -> None:
    """Reply to one Handshake message. A payload-exchanging auth handler (pyarrow's
    ``ClientAuthHandler``) reads a reply to each message before it ends its stream: unanswered,
    it waited out ``limits.body_timeout_seconds``. A client that takes no reply for that long
    is timed out as one that sends nothing."""
    try:
        await asyncio.wait_for(context.write(_HANDSHAKE_REPLY), stall_seconds)
    except TimeoutError:
        raise RequestTimeout(
            f"the client took no reply of the handshake for {stall_seconds:g} seconds; it was ended"
        ) from None


def _table_info(name: str, rows: int, schema: pa.Schema) -> flight_pb2.FlightInfo:
    descriptor = flight_pb2.FlightDescriptor(
        type=flight_pb2.FlightDescriptor.PATH, path=[name.encode()]
    )
    return _flight_info(descriptor, ReadRequest(table=name), schema, rows)


def _flight_info(
    descriptor: flight_pb2.FlightDescriptor, request: ReadRequest, schema: pa.Schema, rows: int
) -> flight_pb2.FlightInfo:
    # No locations: the data is fetched from this same server.
    endpoint = flight_pb2.FlightEndpoint(ticket=flight_pb2.Ticket(ticket=request.ticket()))
    return flight_pb2.FlightInfo(
        schema=schema.serialize().to_pybytes(),
        flight_descriptor=descriptor,
        endpoint=[endpoint],
        total_records=rows,
        total_bytes=-1,
    )


def _is_sql(descriptor: flight_pb2.FlightDescriptor) -> bool:
    """Whether a descriptor carries a Flight SQL command (rather than a path or JSON)."""
    return descriptor.type == flight_pb2.FlightDescriptor.CMD and is_wrapped(descriptor.cmd)


def _text_metadata(context: AnyContext) -> list[tuple[str, str]]:
    """The call's text headers (gRPC lower-cases their names)."""
    return [
        (key, value) for key, value in context.invocation_metadata() or () if isinstance(value, str)
    ]
