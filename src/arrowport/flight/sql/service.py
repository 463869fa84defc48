"""Flight SQL on Arrowport's Flight endpoint: what the ADBC drivers (and any Flight SQL client)
send, answered by the same ingest service and read path as HTTP.

:class:`~arrowport.flight.service.FlightService` hands over every descriptor, ticket and action
that is Flight SQL's (see :mod:`arrowport.flight.sql.envelope`):

* ``GetFlightInfo``: a query (``CommandStatementQuery``, or a prepared statement) runs at once,
  read-only like ``POST /query`` (same guard, time limit, admission and result limit); its answer
  waits for ``DoGet`` under a one-time ticket. Catalog commands (SqlInfo, catalogs, schemas,
  tables, table types, keys) answer from the catalog when fetched: their ticket is the command.
* ``GetSchema``: the schema of any of those, planned without running the query.
* ``DoPut``: bulk ingestion (``CommandStatementIngest``, see :mod:`arrowport.flight.sql.ingest`)
  through the same put flow as Arrowport's own Flight puts; parameters for a prepared statement;
  statements that change data are refused (403 ``read_only``): data arrives by ingestion.
* ``DoAction``: ``CreatePreparedStatement``, ``ClosePreparedStatement``, ``BeginTransaction``,
  ``EndTransaction``.

Scopes as for the rest of Flight: ``ingest`` (for the stream) to ingest, ``read`` for queries and
catalog commands; beginning a transaction needs either (an ingest-only client's DB-API
connection begins one when it connects).
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterable, Iterator

import pyarrow as pa
from google.protobuf.message import Message as ProtoMessage

from arrowport.auth import Principal
from arrowport.errors import InvalidOptions, NotImplementedFeature, PayloadTooLarge, ReadOnly
from arrowport.flight.frames import Frame, encode_stream, frame_messages
from arrowport.flight.protocol import flight_pb2
from arrowport.flight.protocol import flight_sql_pb2 as sql
from arrowport.flight.sql import catalog, commands, info
from arrowport.flight.sql.answers import Answer, Answers, Streaming
from arrowport.flight.sql.envelope import (
    M,
    action_result,
    decode,
    endpoint_info,
    ipc_schema,
    pack,
    text,
    unpack,
    unserved,
    wrap,
)
from arrowport.flight.sql.ingest import ingest_options
from arrowport.flight.sql.statements import (
    STATEMENT_IDLE_SECONDS,
    PreparedStatement,
    parameters_size,
    read_parameters,
    statements,
)
from arrowport.flight.sql.transactions import SNAPSHOT_IDLE_SECONDS, Transaction, Transactions
from arrowport.ingest.streams import IngestOptions
from arrowport.options import IngestReply
from arrowport.reads import result_write_options
from arrowport.services import Services
from arrowport.storage import metadata
from arrowport.storage.background import Periodic
from arrowport.storage.engine import Engine
from arrowport.storage.query import Parameters
from arrowport.storage.query_stop import QueryStop
from arrowport.storage.snapshot import Snapshot

ACTIONS = {
    "CreatePreparedStatement": "Flight SQL: prepare a read-only query",
    "ClosePreparedStatement": "Flight SQL: close a prepared statement",
    "BeginTransaction": "Flight SQL: begin a transaction (one snapshot for its queries)",
    "EndTransaction": "Flight SQL: end a transaction (commit or rollback)",
}
# Actions of Flight and Flight SQL that this server does not serve (UNIMPLEMENTED).
UNSERVED_ACTIONS = frozenset(
    {
        "CreatePreparedSubstraitPlan",
        "BeginSavepoint",
        "EndSavepoint",
        "CancelQuery",
        "CancelFlightInfo",
        "RenewFlightEndpoint",
        "SetSessionOptions",
        "GetSessionOptions",
    }
)
SWEEP_SECONDS = 5.0

Put = Callable[[IngestOptions, Iterator[Frame]], IngestReply]


class FlightSql:
    def __init__(self, services: Services) -> None:
        self._services = services
        self._reads = services.reads
        self._settings = services.settings
        storage = services.storage
        self._engine = storage if isinstance(storage, Engine) else None
        self._catalog: str | None = None
        flight = services.settings.flight
        self._statements = statements(flight.max_prepared_statements_per_client)
        self._answers = Answers(flight.max_spooled_answer_bytes, flight.spool_dir)
        services.metrics.spooled_answer_bytes.set_function(lambda: self._answers.room.used)
        self._reads.reclaim_turns_with(self._answers.drop_waiting)
        self._transactions = Transactions(
            lambda: Snapshot(self._db()), flight.max_transactions_per_client, SWEEP_SECONDS
        )
        self._info = info.values(
            int(STATEMENT_IDLE_SECONDS * 1000), int(SNAPSHOT_IDLE_SECONDS * 1000)
        )
        self._sweeper = Periodic("arrowport-flight-sql", SWEEP_SECONDS, self.sweep)

    def _db(self) -> Engine:
        if self._engine is None:
            raise NotImplementedFeature("Flight SQL is not available on this storage target")
        return self._engine

    def _catalog_name(self) -> str:
        if self._catalog is None:
            self._catalog = metadata.catalog_name(self._db())
        return self._catalog

    # -- GetFlightInfo, GetSchema, DoGet ---------------------------------------------------------

    def flight_info(
        self,
        descriptor: flight_pb2.FlightDescriptor,
        principal: Principal,
        stop: QueryStop | None = None,
    ) -> flight_pb2.FlightInfo:
        """What GetFlightInfo answers; a query is run now (``stop`` ends it from another
        thread: its call ended first) and its answer kept for the ticket's DoGet."""
        name, body = unpack(descriptor.cmd, "the command")
        if name == "CommandStatementQuery":
            cmd = decode(sql.CommandStatementQuery, body, "the command")
            transaction = cmd.transaction_id if cmd.HasField("transaction_id") else None
            query = self._query_text(cmd.query)
            answer = self._run(query, None, transaction, principal, True, stop)
            return self._answer_info(descriptor, answer, principal, stop)
        if name == "CommandPreparedStatementQuery":
            statement = self._statement(body, principal)
            answer = self._run(
                statement.sql, statement.arguments(), statement.transaction, principal, False, stop
            )
            return self._answer_info(descriptor, answer, principal, stop)
        schema = commands.schema(name, body, principal)
        return endpoint_info(descriptor, schema, wrap(name, body), -1)

    def schema(
        self,
        descriptor: flight_pb2.FlightDescriptor,
        principal: Principal,
        stop: QueryStop | None = None,
    ) -> pa.Schema:
        """What GetSchema answers (``stop``: as for :meth:`flight_info`, for a query that must
        run to be described)."""
        name, body = unpack(descriptor.cmd, "the command")
        if name == "CommandStatementQuery":
            principal.require("read")
            cmd = decode(sql.CommandStatementQuery, body, "the command")
            query = self._query_text(cmd.query)
            if cmd.HasField("transaction_id"):
                txn = self._transactions.get(cmd.transaction_id, principal.name)
                return self._planned_in(txn, query, None, stop)
            return self._reads.query_schema(query, stop=stop)
        if name == "CommandPreparedStatementQuery":
            principal.require("read")
            statement = self._statement(body, principal)
            if statement.shape.schema is not None:
                return statement.shape.schema
            held = statement.transaction
            if held is not None and self._transactions.held(held, principal.name):
                txn = self._transactions.get(held, principal.name)
                return self._planned_in(txn, statement.sql, statement.params, stop)
            return self._reads.query_schema(statement.sql, statement.params, stop)
        return commands.schema(name, body, principal)

    def _planned_in(
        self, txn: Transaction, query: str, params: Parameters, stop: QueryStop | None
    ) -> pa.Schema:
        """``query``'s result schema as ``txn``'s snapshot plans it, in a query turn; one that
        cannot be planned without running the query is what running it there answers."""

        def describe() -> pa.Schema:
            schema = self._transactions.schema(txn, query, params, stop)
            if schema is not None:
                return schema
            with self._transactions.query(txn, query, params, stop) as rows:
                return rows.schema

        return self._reads.with_turn(describe)

    def do_get(self, ticket: bytes, principal: Principal) -> Iterator[bytes]:
        name, body = unpack(ticket, "the ticket")
        options = result_write_options(self._settings.compression)
        if name == "TicketStatementQuery":
            principal.require("read")
            handle = decode(sql.TicketStatementQuery, body, "the ticket").statement_handle
            answer = self._answers.take(handle, principal.name)
            with contextlib.closing(answer):  # its spool is deleted, whatever happens
                yield from encode_stream(
                    answer.schema, answer.batches(self._reads.budget()), options
                )
            return
        table = commands.answer(self._db, self._info, name, body, principal)
        yield from encode_stream(table.schema, catalog.batches(table), options)

    def _answer_info(
        self,
        descriptor: flight_pb2.FlightDescriptor,
        answer: Answer,
        principal: Principal,
        stop: QueryStop | None,
    ) -> flight_pb2.FlightInfo:
        schema, rows = answer.schema, answer.rows
        handle = self._answers.add(principal.name, answer)
        if stop is not None and stop.requested:
            # The call ended as the query did: nobody will fetch the answer, or free its turn.
            self._answers.take(handle, principal.name).close()
        ticket = pack(sql.TicketStatementQuery(statement_handle=handle))
        return endpoint_info(descriptor, schema, ticket, rows)

    def _run(
        self,
        query: str,
        params: Parameters,
        transaction: bytes | None,
        principal: Principal,
        strict: bool,
        stop: QueryStop | None,
    ) -> Answer:
        """Run a query, in ``transaction`` when given (a prepared statement's, not ``strict``:
        run on its own once that transaction has ended)."""
        principal.require("read")
        txn = None
        if transaction is not None and (
            strict or self._transactions.held(transaction, principal.name)
        ):
            txn = self._transactions.get(transaction, principal.name)
        if txn is None:
            return Streaming(self._reads.query(query, params, stop))
        budget = self._reads.budget()

        def spool() -> Answer:
            with self._transactions.query(txn, query, params, stop) as rows:
                return self._answers.spooled(rows, budget)

        return self._reads.with_turn(spool)

    def _query_text(self, raw: bytes) -> str:
        limit = self._settings.limits.max_query_body_bytes
        if len(raw) > limit:
            raise PayloadTooLarge(
                f"the query is longer than {limit} bytes (limits.max_query_body_bytes)",
                limit=limit,
            )
        query = text(raw, "the SQL text")
        if not query.strip():
            raise InvalidOptions("the query is empty")
        return query

    def _statement(self, body: bytes, principal: Principal) -> PreparedStatement:
        cmd = decode(sql.CommandPreparedStatementQuery, body, "the command")
        return self._statements.get(cmd.prepared_statement_handle, principal.name)

    # -- DoPut -----------------------------------------------------------------------------------

    def do_put(
        self,
        first: Frame,
        frames: Iterator[Frame],
        principal: Principal,
        headers: Iterable[tuple[str, str]],
        put: Put,
    ) -> Iterator[bytes]:
        """Answer a put whose descriptor is a Flight SQL command; ``put`` lands an ingest."""
        assert first.descriptor is not None
        name, body = unpack(first.descriptor.cmd, "the put command")
        everything = itertools.chain([first], frames)
        result: ProtoMessage
        if name == "CommandStatementIngest":
            ingest = decode(sql.CommandStatementIngest, body, "the put command")
            options = ingest_options(
                ingest, headers, self._catalog_name(), self._services.ingest.streams, principal
            )
            reply = put(options, everything)
            result = sql.DoPutUpdateResult(record_count=reply.rows_processed)
        elif name == "CommandPreparedStatementQuery":
            principal.require("read")
            cmd = decode(sql.CommandPreparedStatementQuery, body, "the put command")
            handle = cmd.prepared_statement_handle
            statement = self._statements.get(handle, principal.name)
            values = self._parameters(everything)
            # Counted (and refused when over the bounds) before anything is converted.
            size = parameters_size(statement.sql, values)
            before = self._statements.resize(handle, principal.name, size)
            try:
                statement.bind(values)
            except BaseException:  # the parameters bound before stay, and so does their size
                self._statements.resize(handle, principal.name, before)
                raise
            result = sql.DoPutPreparedStatementResult(prepared_statement_handle=handle)
        elif name in ("CommandStatementUpdate", "CommandPreparedStatementUpdate"):
            # A SELECT comes this way too, from the DB-API's executemany: say what runs it.
            raise ReadOnly(
                "statements run as updates (ExecuteUpdate; the DB-API's executemany) are not "
                "accepted: SQL here is read-only. Run a query with execute, one set of "
                "parameters at a time; load data with bulk ingestion (adbc_ingest, "
                "CommandStatementIngest)"
            )
        else:
            raise unserved(name, "the put command")
        # The reply is the raw message (not wrapped in an Any), as clients read it.
        yield flight_pb2.PutResult(app_metadata=result.SerializeToString()).SerializeToString()

    def _parameters(self, frames: Iterator[Frame]) -> pa.Table:
        """One batch of bound parameters, held to the size of a query."""
        limits = self._settings.limits
        messages = frame_messages(frames)
        return read_parameters(messages, limits.max_query_body_bytes, limits.max_columns)

    # -- DoAction --------------------------------------------------------------------------------

    def do_action(self, kind: str, body: bytes, principal: Principal) -> Iterator[bytes]:
        if kind in UNSERVED_ACTIONS:
            raise NotImplementedFeature(f"action {kind!r} is not supported by this server")
        if kind == "CreatePreparedStatement":
            request = self._action(body, sql.ActionCreatePreparedStatementRequest)
            yield action_result(self._prepare(request, principal))
        elif kind == "ClosePreparedStatement":
            handle = self._action(
                body, sql.ActionClosePreparedStatementRequest
            ).prepared_statement_handle
            # Not held (closed, dropped, or prepared before the server restarted): a no-op.
            self._statements.release(handle, principal.name)
        elif kind == "BeginTransaction":
            self._action(body, sql.ActionBeginTransactionRequest)
            if not principal.scopes:  # a token for /metrics or /docs alone holds none
                principal.require("read")
            transaction = self._transactions.begin(principal.name)
            yield action_result(sql.ActionBeginTransactionResult(transaction_id=transaction))
        elif kind == "EndTransaction":
            ending = self._action(body, sql.ActionEndTransactionRequest)
            if ending.action not in (
                sql.ActionEndTransactionRequest.END_TRANSACTION_COMMIT,
                sql.ActionEndTransactionRequest.END_TRANSACTION_ROLLBACK,
            ):
                raise InvalidOptions("EndTransaction needs action COMMIT or ROLLBACK")
            self._transactions.end(ending.transaction_id, principal.name)
        else:
            raise AssertionError(f"not a Flight SQL action: {kind}")

    @staticmethod
    def _action(body: bytes, kind: type[M]) -> M:
        """An action's request: an ``Any`` of ``kind`` (INVALID_ARGUMENT otherwise)."""
        what = "the action body"
        name, value = unpack(body, what)
        if name != kind.DESCRIPTOR.name:
            raise InvalidOptions(f"{what} is a {name[:100]}, not a {kind.DESCRIPTOR.name}")
        return decode(kind, value, what)

    def _prepare(
        self, request: sql.ActionCreatePreparedStatementRequest, principal: Principal
    ) -> sql.ActionCreatePreparedStatementResult:
        principal.require("read")
        query = self._query_text(request.query)
        transaction = None
        if request.HasField("transaction_id"):
            transaction = request.transaction_id
            txn = self._transactions.get(transaction, principal.name)  # 404 unless held
            # Planned as the transaction's queries read the tables.
            shape = self._reads.with_turn(lambda: self._transactions.describe(txn, query))
        else:
            shape = self._reads.with_turn(lambda: metadata.describe_query(self._db(), query))
        statement = PreparedStatement(query, shape, transaction)
        handle = self._statements.add(principal.name, statement, size=len(query))
        return sql.ActionCreatePreparedStatementResult(
            prepared_statement_handle=handle,
            dataset_schema=ipc_schema(shape.schema) if shape.schema is not None else b"",
            parameter_schema=ipc_schema(statement.parameter_schema()),
            is_update=False,
        )

    # -- lifecycle -------------------------------------------------------------------------------

    def sweep(self) -> None:
        """Drop what clients left behind: idle statements, unfetched answers, idle snapshots."""
        self._statements.sweep()
        self._answers.sweep()
        self._transactions.sweep()

    def close(self) -> None:
        self._sweeper.stop()
        self._answers.close()
        self._transactions.close()
        self._statements.close()
