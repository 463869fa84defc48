"""Flight SQL with the real ADBC driver (adbc-driver-flightsql, Go core) and polars against real
servers: bulk ingestion in every mode, queries, prepared statements, metadata, transactions,
auth, delivery options and errors; plus the pieces underneath, in process."""

from __future__ import annotations

import datetime
import os
import random
import re
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import adbc_driver_flightsql.dbapi as dbapi
import duckdb
import httpx
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.flight as flight
import pytest
from adbc_driver_manager import AdbcStatusCode

from arrowport.auth import hash_secret, new_token
from arrowport.errors import (
    ClientQuotaExceeded,
    InvalidOptions,
    Overloaded,
    QueryError,
    ResultTooLarge,
    TransactionAborted,
    UnknownHandle,
    UnknownTable,
)
from arrowport.flight.protocol import flight_pb2
from arrowport.flight.protocol import flight_sql_pb2 as sql
from arrowport.flight.sql import transactions
from arrowport.flight.sql.answers import (
    ANSWER_IDLE_SECONDS,
    ANSWER_TURN_SECONDS,
    Answers,
    Spooled,
)
from arrowport.flight.sql.envelope import pack, unpack, wrap
from arrowport.flight.sql.handles import Quota, Registry
from arrowport.reads import ResultBudget
from arrowport.storage import metadata
from arrowport.storage.database import Database
from arrowport.storage.snapshot import Snapshot
from arrowport.storage.table_writer import WritePolicy
from arrowport.storage.writes import WriteJob
from tests.conftest import ARROW_STREAM, grpc_error, ipc_bytes, metric, query
from tests.server import ArrowportProcess, free_port

HEADER = "adbc.flight.sql.rpc.call_header."
SECRETS = {name: new_token(name) for name in ("reader", "loader", "root")}
SECURED: dict[str, Any] = {
    "auth": {
        "tokens": [
            {"name": "reader", "secret_hash": hash_secret(SECRETS["reader"]), "scopes": ["read"]},
            {"name": "loader", "secret_hash": hash_secret(SECRETS["loader"]), "scopes": ["ingest"]},
            {"name": "root", "secret_hash": hash_secret(SECRETS["root"]), "scopes": ["admin"]},
        ]
    }
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArrowportProcess]:
    with ArrowportProcess(tmp_path_factory.mktemp("flight_sql")) as process:
        yield process


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArrowportProcess]:
    with ArrowportProcess(tmp_path_factory.mktemp("flight_sql_auth"), config=SECURED) as process:
        yield process


@pytest.fixture
def http(server: ArrowportProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


@pytest.fixture
def conn(server: ArrowportProcess) -> Iterator[dbapi.Connection]:
    connection = dbapi.connect(server.flight_url)
    yield connection
    connection.close()


def count(http: httpx.Client, table: str) -> int:
    return int(query(http, f"SELECT count(*) AS n FROM {table}").column("n")[0].as_py())


def rows(n: int, start: int = 0) -> pa.Table:
    """``n`` rows in batches of 122,880 (the ADBC driver sends no message over 16 MiB)."""
    ids = pa.array(np.arange(start, start + n, dtype=np.int64))
    value = pc.divide(pc.cast(ids, pa.float64()), 2)
    table = pa.table({"id": ids, "value": value, "name": pc.cast(ids, pa.string())})
    return pa.Table.from_batches(table.to_batches(max_chunksize=122_880))


def adbc_error(call: Callable[[], object]) -> tuple[AdbcStatusCode, str]:
    """The ADBC status and message of the error ``call()`` raises."""
    with pytest.raises(dbapi.Error) as raised:
        call()
    assert "Traceback" not in str(raised.value)
    return raised.value.status_code, str(raised.value)


def ingest(
    connection: dbapi.Connection,
    table: str,
    data: pa.Table | pa.RecordBatch,
    mode: str,
    **options: str,
) -> int:
    with connection.cursor() as cur:
        headers = {HEADER + name: value for name, value in options.items()}
        if headers:
            cur.adbc_statement.set_options(**headers)
        return int(cur.adbc_ingest(table, data, mode=mode))


def fetch(connection: dbapi.Connection, sql_text: str, params: Any = None) -> pa.Table:
    with connection.cursor() as cur:
        cur.execute(sql_text, params)
        return cur.fetch_arrow_table()


# -- bulk ingestion --------------------------------------------------------------------------------


def test_adbc_ingest_a_million_rows_in_every_mode(
    conn: dbapi.Connection, http: httpx.Client
) -> None:
    data = rows(1_000_000)
    assert ingest(conn, "sq_modes", data, "create") == 1_000_000
    assert count(http, "sq_modes") == 1_000_000
    assert ingest(conn, "sq_modes", data, "append") == 1_000_000
    assert count(http, "sq_modes") == 2_000_000
    assert ingest(conn, "sq_modes_ca", data, "create_append") == 1_000_000
    assert ingest(conn, "sq_modes_ca", data, "create_append") == 1_000_000
    assert count(http, "sq_modes_ca") == 2_000_000
    assert ingest(conn, "sq_modes", rows(1_000_000, 5), "replace") == 1_000_000
    assert count(http, "sq_modes") == 1_000_000
    first = query(http, "SELECT min(id) AS lo, max(id) AS hi FROM sq_modes").to_pylist()
    assert first == [{"lo": 5, "hi": 1_000_004}]
    conn.commit()  # a fresh snapshot for the queries below
    landed = fetch(conn, "SELECT count(*) AS n, sum(id) AS s FROM sq_modes_ca").to_pylist()
    assert landed == [{"n": 2_000_000, "s": 2 * sum(range(1_000_000))}]


def test_create_on_an_existing_table_and_append_to_a_missing_one_are_refused(
    conn: dbapi.Connection, http: httpx.Client
) -> None:
    ingest(conn, "sq_exists", rows(3), "create")
    status, message = adbc_error(lambda: ingest(conn, "sq_exists", rows(3), "create"))
    assert status == AdbcStatusCode.ALREADY_EXISTS
    assert "table_exists: table 'sq_exists' already exists" in message
    status, message = adbc_error(lambda: ingest(conn, "sq_missing", rows(3), "append"))
    assert status == AdbcStatusCode.NOT_FOUND
    assert "unknown_table: table 'sq_missing' does not exist" in message
    assert count(http, "sq_exists") == 3
    assert "sq_missing" not in {t["name"] for t in http.get("/tables").json()}


def test_an_ingest_into_an_invalid_table_name_is_told_of_the_table(conn: dbapi.Connection) -> None:
    """The stream defaults to the table's name, so the error blamed an "invalid stream name"
    the user never gave."""
    for table in ("t\u00e5ble", 'we"ird', "my-table"):
        with conn.cursor() as cur:
            status, message = adbc_error(lambda t=table: cur.adbc_ingest(t, rows(2), mode="create"))  # type: ignore[misc]
        assert status == AdbcStatusCode.INVALID_ARGUMENT
        assert "invalid_name: invalid table name" in message, message
        assert "stream" not in message


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"db_schema_name": "_arrowport"}, "invalid table name '_arrowport.sq_target'"),
        ({"db_schema_name": "bad-schema"}, "invalid table name 'bad-schema.sq_target'"),
        ({"catalog_name": "elsewhere"}, "unknown catalog 'elsewhere'"),
        ({"temporary": True}, "temporary tables are not supported"),
    ],
)
def test_ingest_targets_outside_the_database_are_invalid(
    conn: dbapi.Connection, options: dict[str, Any], expected: str
) -> None:
    with conn.cursor() as cur:
        status, message = adbc_error(
            lambda: cur.adbc_ingest("sq_target", rows(2), mode="create", **options)
        )
    assert status == AdbcStatusCode.INVALID_ARGUMENT
    assert expected in message
    with conn.cursor() as cur:  # the database's own catalog and main schema, named, are fine
        catalog = conn.adbc_get_objects(depth="catalogs").read_all()["catalog_name"][0].as_py()
        added = cur.adbc_ingest(
            "sq_target", rows(2), mode="create_append", catalog_name=catalog, db_schema_name="main"
        )
        assert added == 2


def test_delivery_options_travel_as_headers_and_land_once(
    conn: dbapi.Connection, http: httpx.Client
) -> None:
    data = rows(50)
    key = {"arrowport.idempotency_key": "sq-batch-1", "arrowport.stream": "sq_delivery_stream"}
    assert ingest(conn, "sq_delivery", data, "create_append", **key) == 50
    assert ingest(conn, "sq_delivery", data, "create_append", **key) == 50  # a retry
    assert count(http, "sq_delivery") == 50
    status, message = adbc_error(
        lambda: ingest(conn, "sq_delivery", rows(5), "create_append", **key)
    )
    assert status == AdbcStatusCode.ALREADY_EXISTS
    assert "idempotency_conflict" in message
    # A key belongs to its stream: on the table's own stream (the default) it is another one.
    own_stream = {"arrowport.idempotency_key": "sq-batch-1"}
    assert ingest(conn, "sq_delivery", data, "append", **own_stream) == 50
    assert count(http, "sq_delivery") == 100
    producer = {"arrowport.producer_id": "p1", "arrowport.sequence": "0"}
    assert ingest(conn, "sq_delivery", rows(7), "append", **producer) == 7
    # As over HTTP: a sequence already committed writes nothing (its count is not kept).
    assert ingest(conn, "sq_delivery", rows(7), "append", **producer) == 0
    assert count(http, "sq_delivery") == 107
    assert http.get("/streams/sq_delivery/producers/p1").json()["last_sequence"] == 0
    dry = {"arrowport.dry_run": "true"}
    assert ingest(conn, "sq_delivery", rows(9), "append", **dry) == 9
    assert count(http, "sq_delivery") == 107
    status, message = adbc_error(
        lambda: ingest(conn, "sq_delivery", rows(1), "append", **{"arrowport.nope": "1"})
    )
    assert status == AdbcStatusCode.INVALID_ARGUMENT
    assert "unknown ingest option 'arrowport.nope'" in message


def test_an_append_becomes_an_upsert_with_arrowport_mode(
    conn: dbapi.Connection, http: httpx.Client
) -> None:
    ingest(conn, "sq_upsert", rows(10), "create")
    upsert = {"arrowport.mode": "upsert", "arrowport.key_columns": "id"}
    assert ingest(conn, "sq_upsert", rows(10, 5), "append", **upsert) == 10
    assert count(http, "sq_upsert") == 15
    status, message = adbc_error(lambda: ingest(conn, "sq_upsert", rows(1), "replace", **upsert))
    assert status == AdbcStatusCode.INVALID_ARGUMENT
    assert "upsert goes with the append modes" in message


def test_upsert_options_without_arrowport_mode_upsert_are_refused(
    conn: dbapi.Connection, http: httpx.Client
) -> None:
    ingest(conn, "sq_upsert_only", rows(10), "create")
    for mode in ("append", "replace"):
        keyed = {"arrowport.key_columns": "id"}
        status, message = adbc_error(
            partial(ingest, conn, "sq_upsert_only", rows(5), mode, **keyed)
        )
        assert status == AdbcStatusCode.INVALID_ARGUMENT
        assert "key_columns applies to mode upsert only" in message
    assert count(http, "sq_upsert_only") == 10


def test_an_upsert_of_keys_alone_counts_the_keys_already_there(
    conn: dbapi.Connection, http: httpx.Client
) -> None:
    keys = pa.table({"k": pa.array([1, 2], pa.int64())})
    ingest(conn, "sq_keys_only", keys, "create")
    upsert = {"arrowport.mode": "upsert", "arrowport.key_columns": "k"}
    assert ingest(conn, "sq_keys_only", keys, "append", **upsert) == 2
    more = pa.table({"k": pa.array([1, 2, 3, 9, 10], pa.int64())})
    assert ingest(conn, "sq_keys_only", more, "append", **upsert) == 5
    assert count(http, "sq_keys_only") == 5


def flight_error(call: Callable[[], object]) -> tuple[str, str]:
    """The gRPC code and message of the error a pyarrow Flight call raises."""
    with pytest.raises(pa.ArrowException) as raised:
        call()
    code, message = grpc_error(raised.value)
    assert "Traceback" not in message
    return code, message


def put_ingest(
    client: flight.FlightClient, cmd: sql.CommandStatementIngest, data: pa.Table
) -> sql.DoPutUpdateResult:
    descriptor = flight.FlightDescriptor.for_command(pack(cmd))
    writer, reader = client.do_put(descriptor, data.schema)
    writer.write_table(data)
    writer.done_writing()
    reply = reader.read()
    writer.close()
    assert reply is not None
    return sql.DoPutUpdateResult.FromString(reply.to_pybytes())


def test_the_options_map_carries_delivery_options_and_the_reply_is_a_raw_update_result(
    server: ArrowportProcess, http: httpx.Client
) -> None:
    definition = sql.CommandStatementIngest.TableDefinitionOptions(
        if_not_exist=sql.CommandStatementIngest.TableDefinitionOptions.TABLE_NOT_EXIST_OPTION_CREATE,
        if_exists=sql.CommandStatementIngest.TableDefinitionOptions.TABLE_EXISTS_OPTION_APPEND,
    )
    cmd = sql.CommandStatementIngest(table_definition_options=definition, table=b"sq_map")
    for key, value in [
        ("arrowport.producer_id", "m"),
        ("arrowport.sequence", "3"),
        ("adbc.x", "y"),
    ]:
        cmd.options.add(key=key.encode(), value=value.encode())
    with flight.connect(server.flight_url) as client:
        assert put_ingest(client, cmd, rows(11)).record_count == 11
        assert put_ingest(client, cmd, rows(11)).record_count == 0  # sequence 3 again
        cmd.options.add(key=b"arrowport.schema", value=b"x")
        assert flight_error(lambda: put_ingest(client, cmd, rows(1)))[0] == "INVALID_ARGUMENT"
    assert count(http, "sq_map") == 11
    assert http.get("/streams/sq_map/producers/m").json()["last_sequence"] == 3


ZERO = pa.schema([("id", pa.int64()), ("name", pa.string())])
NOTHING_SENT = "invalid_options: the put carried no data and no descriptor"


def tables(http: httpx.Client) -> set[str]:
    return {t["name"] for t in http.get("/tables").json()}


def landed(http: httpx.Client, table: str) -> pa.Table:
    return query(http, f"SELECT * FROM {table}")


@pytest.mark.parametrize("mode", ["create", "append", "replace", "create_append"])
def test_an_adbc_ingest_of_a_zero_row_table_is_told_that_nothing_arrived(
    conn: dbapi.Connection, http: httpx.Client, mode: str
) -> None:
    """For a table (or reader) of no record batches the driver opens a put and ends it without
    a frame: no descriptor, no schema. No table or mode can be known, so nothing is created or
    changed, and the error says why (not that a first frame lacked its descriptor)."""
    existing = f"sq_zero_kept_{mode}"
    ingest(conn, existing, rows(3), "create")
    for table in (f"sq_zero_table_{mode}", existing):
        for data in (ZERO.empty_table(), pa.table({"id": pa.array([], pa.int64())})):
            status, message = adbc_error(partial(ingest, conn, table, data, mode))
            assert status == AdbcStatusCode.INVALID_ARGUMENT
            assert NOTHING_SENT in message
            assert "first frame must carry" not in message
    assert f"sq_zero_table_{mode}" not in tables(http)
    assert count(http, existing) == 3
    assert landed(http, existing).schema == rows(1).schema


def test_an_adbc_ingest_of_a_zero_row_record_batch_works_in_every_mode(
    conn: dbapi.Connection, http: httpx.Client
) -> None:
    """A record batch of no rows is sent with its descriptor and schema: each mode does what it
    does with rows, with none."""
    empty = pa.RecordBatch.from_pylist([], schema=ZERO)
    assert ingest(conn, "sq_zero_create", empty, "create") == 0
    assert ingest(conn, "sq_zero_create_append", empty, "create_append") == 0
    assert ingest(conn, "sq_zero_replace", empty, "replace") == 0
    for table in ("sq_zero_create", "sq_zero_create_append", "sq_zero_replace"):
        assert landed(http, table).schema == ZERO
        assert count(http, table) == 0
    status, message = adbc_error(lambda: ingest(conn, "sq_zero_create", empty, "create"))
    assert status == AdbcStatusCode.ALREADY_EXISTS
    assert "table_exists: table 'sq_zero_create' already exists" in message
    status, message = adbc_error(lambda: ingest(conn, "sq_zero_missing", empty, "append"))
    assert status == AdbcStatusCode.NOT_FOUND
    assert "unknown_table: table 'sq_zero_missing' does not exist" in message
    assert "sq_zero_missing" not in tables(http)

    ingest(conn, "sq_zero_rows", rows(4), "create")
    no_rows = pa.RecordBatch.from_pylist([], schema=rows(1).schema)
    assert ingest(conn, "sq_zero_rows", no_rows, "append") == 0
    assert ingest(conn, "sq_zero_rows", no_rows, "create_append") == 0
    assert count(http, "sq_zero_rows") == 4
    assert ingest(conn, "sq_zero_rows", empty, "replace") == 0  # another schema, no rows
    assert landed(http, "sq_zero_rows").schema == ZERO
    assert count(http, "sq_zero_rows") == 0


def test_a_flight_sql_ingest_put_of_a_schema_and_no_batches_creates_an_empty_table(
    server: ArrowportProcess, http: httpx.Client
) -> None:
    """pyarrow's Flight client sends the descriptor with the schema even when no batch
    follows: a zero-row ingest with it creates the table."""
    options = sql.CommandStatementIngest.TableDefinitionOptions
    definition = options(
        if_not_exist=options.TABLE_NOT_EXIST_OPTION_CREATE,
        if_exists=options.TABLE_EXISTS_OPTION_FAIL,
    )
    cmd = sql.CommandStatementIngest(table_definition_options=definition, table=b"sq_zero_put")
    with flight.connect(server.flight_url) as client:
        assert put_ingest(client, cmd, ZERO.empty_table()).record_count == 0
        code, message = flight_error(lambda: put_ingest(client, cmd, ZERO.empty_table()))
    assert code == "ALREADY_EXISTS"
    assert message.startswith("table_exists: ")
    assert landed(http, "sq_zero_put").schema == ZERO
    assert count(http, "sq_zero_put") == 0


# -- queries -----------------------------------------------------------------------------------------


def test_queries_and_parameterised_queries(conn: dbapi.Connection) -> None:
    ingest(conn, "sq_query", rows(1000), "create")
    conn.commit()
    table = fetch(conn, "SELECT id, name FROM sq_query WHERE id < 3 ORDER BY id")
    assert table.to_pylist() == [{"id": i, "name": str(i)} for i in range(3)]
    picked = fetch(conn, "SELECT id FROM sq_query WHERE id BETWEEN ? AND ? ORDER BY id", [10, 12])
    assert picked.column("id").to_pylist() == [10, 11, 12]
    assert fetch(conn, "SELECT ? IS NULL AS missing", [None]).to_pylist() == [{"missing": True}]
    with conn.cursor() as cur:  # the same prepared statement, parameters bound again
        for low in (1, 990):
            cur.execute("SELECT count(*) AS n FROM sq_query WHERE id >= ?", [low])
            assert cur.fetchone() == (1000 - low,)
    big = fetch(conn, "SELECT * FROM sq_query, range(300) AS r(k)")
    assert big.num_rows == 300_000


UNSIGNED = (
    "SELECT '340282366920938463463374607431768211455'::UHUGEINT AS u, "
    "?::UHUGEINT + 170141183460469231731687303715884105727::UHUGEINT AS v"
)


@pytest.mark.parametrize("autocommit", [True, False])
def test_uhugeints_past_2_to_the_127_are_answered_exactly(
    server: ArrowportProcess, autocommit: bool
) -> None:
    """DuckDB exports UHUGEINT as a decimal128 holding its bits: 2^128 - 1 was answered as -1.
    Described and answered as decimal256(39, 0), in a transaction or not."""
    with dbapi.connect(server.flight_url, autocommit=autocommit) as connection:
        with connection.cursor() as cur:
            described = cur.adbc_execute_schema(UNSIGNED.replace("?", "1"))
        table = fetch(connection, UNSIGNED, [1])
    unsigned = pa.decimal256(39, 0)
    assert described.types == table.schema.types == [unsigned, unsigned]
    assert table.to_pylist() == [{"u": Decimal(2**128 - 1), "v": Decimal(2**127)}]


def test_a_query_without_rows_answers_its_schema(conn: dbapi.Connection) -> None:
    empty = fetch(conn, "SELECT 1 AS a, 'x' AS b WHERE false")
    assert empty.num_rows == 0
    assert empty.schema.names == ["a", "b"]


def test_named_parameters_bind_by_name(conn: dbapi.Connection) -> None:
    # Columns in another order than the placeholders: only their names bind them.
    bound = pa.record_batch({"low": [40], "high": [2]})
    assert fetch(conn, "SELECT $high + $low AS s, $low AS l", bound).to_pylist() == [
        {"s": 42, "l": 40}
    ]
    with conn.cursor() as cur:
        status, message = adbc_error(
            lambda: cur.execute("SELECT $high AS h", pa.record_batch({"other": [1]}))
        )
    assert status == AdbcStatusCode.INVALID_ARGUMENT
    assert "named parameters are $high" in message
    twice = pa.RecordBatch.from_arrays([pa.array([1]), pa.array([2])], names=["a", "A"])
    with conn.cursor() as cur:
        status, message = adbc_error(lambda: cur.execute("SELECT $a AS a", twice))
    assert status == AdbcStatusCode.INVALID_ARGUMENT
    with conn.cursor() as cur:
        status, message = adbc_error(lambda: cur.execute("SELECT $1 + $a AS s", [1, 2]))
    assert status == AdbcStatusCode.INVALID_ARGUMENT
    assert "Mixing named and positional parameters" in message
    # Names match as DuckDB matches them: regardless of case.
    assert fetch(conn, "SELECT $Name AS n", pa.record_batch({"name": [7]})).to_pylist() == [
        {"n": 7}
    ]


def test_integer_parameters_are_typed_as_duckdb_types_python_ints(conn: dbapi.Connection) -> None:
    """ADBC sends every Python int as int64; bound as BIGINT, functions taking an INTEGER
    refused them. A product of parameters that may pass 2**31 is cast, as the README says."""
    row = fetch(
        conn,
        "SELECT round(2.567, ?) AS r, DATE '2024-01-01' + ? AS d, ?::BIGINT * ? AS p",
        [2, 3, 100_000, 100_000],
    ).to_pylist()
    assert row == [{"r": Decimal("2.57"), "d": datetime.date(2024, 1, 4), "p": 10_000_000_000}]


def test_parameters_that_would_blow_up_when_bound_are_refused(server: ArrowportProcess) -> None:
    # 20 million nulls in one list: a few hundred bytes of Arrow, 160 MB as Python values.
    nulls = pa.ListArray.from_arrays(pa.array([0, 20_000_000], pa.int32()), pa.nulls(20_000_000))
    bomb = pa.table({"p": nulls})
    request = sql.ActionCreatePreparedStatementRequest(query=b"SELECT len(?) AS n")
    with flight.connect(server.flight_url) as client:
        action = flight.Action("CreatePreparedStatement", pack(request))
        [answer] = list(client.do_action(action))
        _, body = unpack(answer.body.to_pybytes(), "the answer")
        created = sql.ActionCreatePreparedStatementResult.FromString(body)
        cmd = sql.CommandPreparedStatementQuery(
            prepared_statement_handle=created.prepared_statement_handle
        )

        def bind(table: pa.Table) -> None:
            descriptor = flight.FlightDescriptor.for_command(pack(cmd))
            writer, reader = client.do_put(descriptor, table.schema)
            writer.write_table(table)
            writer.done_writing()
            reader.read()
            writer.close()

        code, message = flight_error(lambda: bind(bomb))
        assert code == "INVALID_ARGUMENT"
        assert "20,000,001 values" in message  # the list and its elements
        bind(pa.table({"p": pa.array([[1, 2, 3]])}))  # the statement still takes sane ones
    assert server.healthy()


def test_statements_that_would_write_are_read_only(
    conn: dbapi.Connection, server: ArrowportProcess
) -> None:
    ingest(conn, "sq_ro", rows(3), "create")
    for statement in (
        "INSERT INTO sq_ro (id) VALUES (9)",
        "CREATE TABLE sq_x AS SELECT 1",
        "DROP TABLE sq_ro",
    ):
        status, message = adbc_error(lambda s=statement: fetch(conn, s))  # type: ignore[misc]
        assert status == AdbcStatusCode.UNAUTHORIZED
        assert "read_only" in message
    with conn.cursor() as cur:
        status, message = adbc_error(lambda: cur.executescript("DELETE FROM sq_ro"))
    assert status == AdbcStatusCode.UNAUTHORIZED
    assert "read_only" in message
    with conn.cursor() as cur:  # a query sent as an update is told how to run it
        status, message = adbc_error(lambda: cur.executemany("SELECT ?", [[1], [2]]))
    assert status == AdbcStatusCode.UNAUTHORIZED
    assert "executemany" in message
    assert "Run a query with execute" in message
    with flight.connect(server.flight_url) as client:
        descriptor = flight.FlightDescriptor.for_command(
            pack(sql.CommandStatementQuery(query=b"DELETE FROM sq_ro"))
        )
        code, message = flight_error(lambda: client.get_flight_info(descriptor))
        assert code == "PERMISSION_DENIED", message
    conn.commit()
    assert fetch(conn, "SELECT count(*) AS n FROM sq_ro").to_pylist() == [{"n": 3}]


def test_a_failed_query_aborts_its_transaction_until_rollback(conn: dbapi.Connection) -> None:
    ingest(conn, "sq_abort", rows(4), "create")
    status, message = adbc_error(lambda: fetch(conn, "SELECT 'x'::INTEGER FROM sq_abort"))
    assert status == AdbcStatusCode.INVALID_ARGUMENT
    assert "query_error" in message
    status, message = adbc_error(lambda: fetch(conn, "SELECT count(*) FROM sq_abort"))
    assert "transaction_aborted" in message
    conn.rollback()
    assert fetch(conn, "SELECT count(*) AS n FROM sq_abort").to_pylist() == [{"n": 4}]


@pytest.mark.parametrize("parameters", [None, []], ids=["none", "empty"])
def test_a_query_run_without_its_parameters_is_refused_and_leaves_its_transaction(
    conn: dbapi.Connection, parameters: list[int] | None
) -> None:
    """Run with none bound, the query failed in DuckDB, aborting the transaction
    (transaction_aborted until a rollback), where too few parameters are refused first."""
    ingest(conn, "sq_unbound", rows(4), "replace")
    conn.commit()
    assert fetch(conn, "SELECT count(*) AS n FROM sq_unbound").to_pylist() == [{"n": 4}]
    query = "SELECT count(*) AS n FROM sq_unbound WHERE id > ?"
    status, message = adbc_error(lambda: fetch(conn, query, parameters))
    assert status == AdbcStatusCode.INVALID_ARGUMENT
    assert "invalid_options: the query takes 1 parameters; none were bound" in message
    assert fetch(conn, query, [1]).to_pylist() == [{"n": 2}]  # the same transaction goes on


def test_a_schema_is_created_on_demand_and_is_the_same_table_everywhere(
    conn: dbapi.Connection, http: httpx.Client
) -> None:
    with conn.cursor() as cur:
        assert cur.adbc_ingest("sq_events", rows(5), mode="create", db_schema_name="sq_an") == 5
        status, message = adbc_error(
            lambda: cur.adbc_ingest("sq_events", rows(1), mode="create", db_schema_name="sq_an")
        )
        assert status == AdbcStatusCode.ALREADY_EXISTS
        assert "'sq_an.sq_events' already exists" in message
    # The same table by its qualified name over HTTP and in SQL; main's namesake is another.
    ingest(conn, "sq_events", rows(2), "create")
    appended = http.post(
        "/stream/sq_events",
        params={"table": "sq_an.sq_events"},
        content=ipc_bytes(rows(3, start=5)),
        headers={"Content-Type": ARROW_STREAM},
    )
    assert appended.status_code == 200, appended.text
    assert count(http, "sq_an.sq_events") == 8
    assert count(http, "sq_events") == 2
    assert fetch(conn, "SELECT max(id) AS m FROM sq_an.sq_events")["m"][0].as_py() == 7
    assert http.get("/tables/sq_an.sq_events").json()["row_count"] == 8
    assert "sq_an.sq_events" in {t["name"] for t in http.get("/tables").json()}
    # Listed as a schema of its own, with its table and schema.
    objects = conn.adbc_get_objects(db_schema_filter="sq_an").read_all().to_pylist()
    (schema,) = objects[0]["catalog_db_schemas"]
    assert schema["db_schema_name"] == "sq_an"
    assert [t["table_name"] for t in schema["db_schema_tables"]] == ["sq_events"]
    described = conn.adbc_get_table_schema("sq_events", db_schema_filter="sq_an")
    assert described.names == ["id", "value", "name"]
    # "main" named is the default schema.
    with conn.cursor() as cur:
        assert cur.adbc_ingest("sq_events", rows(1), mode="append", db_schema_name="main") == 1
    assert count(http, "sq_events") == 3


# -- metadata ----------------------------------------------------------------------------------------


def test_get_info_objects_and_table_schema(conn: dbapi.Connection) -> None:
    ingest(conn, "sq_meta_one", rows(2), "create")
    ingest(
        conn,
        "sq_meta_two",
        pa.table({"flag": [True], "when": pa.array([1], pa.date32())}),
        "create",
    )
    info = conn.adbc_get_info()
    assert info["vendor_name"] == "Arrowport"
    assert info["vendor_arrow_version"] == pa.__version__
    objects = conn.adbc_get_objects(table_name_filter="sq_meta%").read_all().to_pylist()
    assert len(objects) == 1
    catalog = objects[0]
    assert catalog["catalog_name"]
    schemas = {s["db_schema_name"]: s for s in catalog["catalog_db_schemas"]}
    assert "main" in schemas
    assert "_arrowport" not in schemas
    tables = {t["table_name"]: t for t in schemas["main"]["db_schema_tables"]}
    assert sorted(tables) == ["sq_meta_one", "sq_meta_two"]
    assert [c["column_name"] for c in tables["sq_meta_two"]["table_columns"]] == ["flag", "when"]
    assert conn.adbc_get_table_schema("sq_meta_one").names == ["id", "value", "name"]
    assert conn.adbc_get_table_schema("sq_meta_two").field("when").type == pa.date32()
    status, _ = adbc_error(lambda: conn.adbc_get_table_schema("sq_meta_none"))
    assert status == AdbcStatusCode.NOT_FOUND
    assert conn.adbc_get_table_types() == ["TABLE"]
    views = conn.adbc_get_objects(table_types_filter=["VIEW"]).read_all().to_pylist()
    assert views[0]["catalog_db_schemas"][0]["db_schema_tables"] == []
    others = conn.adbc_get_objects(db_schema_filter="_arrowport%").read_all().to_pylist()
    assert all(not c["catalog_db_schemas"] for c in others)


def test_table_schemas_keep_their_not_null_columns(
    conn: dbapi.Connection, http: httpx.Client
) -> None:
    """DuckDB's Arrow export marks every column nullable: a NOT NULL column was described as
    nullable by adbc_get_table_schema (and GetTables' table_schema), unlike HTTP's /tables."""
    schema = pa.schema([pa.field("id", pa.int64(), nullable=False), pa.field("note", pa.string())])
    data = pa.Table.from_pylist([{"id": 1, "note": None}], schema=schema)
    ingest(conn, "sq_not_null", data, "create")
    columns = http.get("/tables/sq_not_null").json()["columns"]
    assert [(c["name"], c["nullable"]) for c in columns] == [("id", False), ("note", True)]
    described = conn.adbc_get_table_schema("sq_not_null")
    assert [(f.name, f.nullable) for f in described] == [("id", False), ("note", True)]
    assert described.types == [pa.int64(), pa.string()]


def test_get_objects_reports_each_columns_duckdb_type_name(
    conn: dbapi.Connection, http: httpx.Client
) -> None:
    """The table schemas carried no TYPE_NAME: every xdbc_type_name was null (DuckDB's own
    ADBC driver says BIGINT, DECIMAL(10,2)...), so a tool could not tell a UUID from text."""
    data = pa.table(
        {
            "id": pa.array([1], pa.int64()),
            "amount": pa.array([Decimal("1.50")], pa.decimal128(10, 2)),
            "tag": ["x"],
        }
    )
    ingest(conn, "sq_type_names", data, "create")
    declared = [c["type"] for c in http.get("/tables/sq_type_names").json()["columns"]]
    assert declared == ["BIGINT", "DECIMAL(10,2)", "VARCHAR"]
    objects = conn.adbc_get_objects(depth="columns", table_name_filter="sq_type_names")
    [catalog] = objects.read_all().to_pylist()
    [main] = [s for s in catalog["catalog_db_schemas"] if s["db_schema_name"] == "main"]
    [table] = main["db_schema_tables"]
    assert [c["xdbc_type_name"] for c in table["table_columns"]] == declared
    described = conn.adbc_get_table_schema("sq_type_names")
    assert [f.metadata[b"ARROW:FLIGHT:SQL:TYPE_NAME"].decode() for f in described] == declared


def test_get_table_schema_of_a_name_in_two_schemas_is_the_main_tables_as_queries_read_it(
    conn: dbapi.Connection,
) -> None:
    """The driver takes the first table of that name GetTables lists: sorted by schema name,
    analytics.sq_amb came before main.sq_amb, which is what a query of sq_amb reads."""
    ingest(conn, "sq_amb", pa.table({"main_col": [1]}), "replace")
    with conn.cursor() as cur:
        cur.adbc_ingest("sq_amb", pa.table({"other_col": [1]}), "replace", db_schema_name="ab")
    conn.commit()
    assert fetch(conn, "SELECT * FROM sq_amb").column_names == ["main_col"]
    assert conn.adbc_get_table_schema("sq_amb").names == ["main_col"]
    assert conn.adbc_get_table_schema("sq_amb", db_schema_filter="ab").names == ["other_col"]
    objects = conn.adbc_get_objects(depth="tables", table_name_filter="sq_amb").read_all()
    schemas = [s["db_schema_name"] for s in objects.to_pylist()[0]["catalog_db_schemas"]]
    assert schemas[0] == "main"
    assert "ab" in schemas


# -- transactions --------------------------------------------------------------------------------------


def test_a_transaction_reads_one_snapshot_until_commit_or_rollback(
    server: ArrowportProcess,
) -> None:
    with (
        dbapi.connect(server.flight_url) as reader,
        dbapi.connect(server.flight_url, autocommit=True) as writer,
    ):
        ingest(writer, "sq_snap", rows(10), "create")
        total = "SELECT count(*) AS n FROM sq_snap"
        assert fetch(reader, total).to_pylist() == [{"n": 10}]
        ingest(writer, "sq_snap", rows(5), "append")
        assert fetch(reader, total).to_pylist() == [{"n": 10}]
        assert fetch(writer, total).to_pylist() == [{"n": 15}]
        reader.commit()
        assert fetch(reader, total).to_pylist() == [{"n": 15}]
        ingest(writer, "sq_snap", rows(1), "append")
        assert fetch(reader, total, None).to_pylist() == [{"n": 15}]
        reader.rollback()
        assert fetch(reader, total).to_pylist() == [{"n": 16}]


def test_a_transaction_prepares_and_describes_queries_in_its_snapshot(
    server: ArrowportProcess,
) -> None:
    """A table replaced with other columns after the transaction's first query: its later
    queries are prepared (and described) as they read it, not as it is now."""
    with (
        dbapi.connect(server.flight_url) as reader,
        dbapi.connect(server.flight_url, autocommit=True) as writer,
    ):
        ingest(writer, "sq_reshaped", pa.table({"a": pa.array([1], pa.int64())}), "create")
        assert fetch(reader, "SELECT count(*) AS n FROM sq_reshaped").to_pylist() == [{"n": 1}]
        reshaped = pa.table({"a": ["text"], "c": [1.5]})
        ingest(writer, "sq_reshaped", reshaped, "replace")
        assert fetch(reader, "SELECT a + 1 AS b FROM sq_reshaped").to_pylist() == [{"b": 2}]
        with reader.cursor() as cur:
            assert cur.adbc_execute_schema("SELECT * FROM sq_reshaped").names == ["a"]
            status, message = adbc_error(lambda: cur.execute("SELECT c FROM sq_reshaped"))
        assert status == AdbcStatusCode.INVALID_ARGUMENT
        assert "query_error" in message
        reader.rollback()  # a query that could not be planned aborted nothing to keep
        assert fetch(reader, "SELECT c FROM sq_reshaped").to_pylist() == [{"c": 1.5}]
        assert fetch(writer, "SELECT a FROM sq_reshaped").to_pylist() == [{"a": "text"}]


# -- auth -----------------------------------------------------------------------------------------------


def test_basic_and_bearer_auth_with_scopes(secured: ArrowportProcess) -> None:
    url = secured.flight_url
    basic = {"username": "loader", "password": SECRETS["loader"]}
    with dbapi.connect(url, db_kwargs=basic) as loader:
        assert ingest(loader, "sq_auth", rows(6), "create") == 6
        status, message = adbc_error(lambda: fetch(loader, "SELECT count(*) FROM sq_auth"))
        assert status == AdbcStatusCode.UNAUTHORIZED
        assert "forbidden: token 'loader' lacks the 'read' scope" in message
    # The driver sends Basic credentials without base64 padding ("root:..." needs some).
    with dbapi.connect(url, db_kwargs={"username": "root", "password": SECRETS["root"]}) as root:
        assert fetch(root, "SELECT count(*) AS n FROM sq_auth").to_pylist() == [{"n": 6}]
    bearer = {"adbc.flight.sql.authorization_header": f"Bearer {SECRETS['reader']}"}
    with dbapi.connect(url, db_kwargs=bearer) as reader:
        assert fetch(reader, "SELECT count(*) AS n FROM sq_auth").to_pylist() == [{"n": 6}]
        assert reader.adbc_get_table_schema("sq_auth").names == ["id", "value", "name"]
        status, message = adbc_error(lambda: ingest(reader, "sq_auth", rows(1), "append"))
        assert status == AdbcStatusCode.UNAUTHORIZED
        assert "forbidden" in message
    status, _ = adbc_error(
        lambda: dbapi.connect(url, db_kwargs={"username": "loader", "password": "wrong"})
    )
    assert status == AdbcStatusCode.UNAUTHENTICATED
    with dbapi.connect(url, autocommit=True) as anonymous:
        status, message = adbc_error(lambda: fetch(anonymous, "SELECT 1"))
        assert status == AdbcStatusCode.UNAUTHENTICATED
        assert "unauthenticated: " in message


# -- malformed requests ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "code"),
    [
        (b"\x0a\xff", "INVALID_ARGUMENT"),  # not a protobuf message
        (b"\x0a\x03abc", "INVALID_ARGUMENT"),  # an Any of no known type
        (wrap("CommandGetTables", b"\xff\xff"), "INVALID_ARGUMENT"),  # a bad body
        (wrap("CommandGetPrimaryKeys", b"\xff\xff\xff"), "INVALID_ARGUMENT"),
        (wrap("CommandGetExportedKeys", b"\xff\xff\xff"), "INVALID_ARGUMENT"),
        (wrap("CommandGetImportedKeys", b"\x1a\x05ab"), "INVALID_ARGUMENT"),  # cut short
        (wrap("CommandGetCrossReference", b"\xff"), "INVALID_ARGUMENT"),
        (wrap("CommandStatementQuery", b"\x0a\x02\xff\xfe"), "INVALID_ARGUMENT"),  # not UTF-8
        (wrap("CommandGetXdbcTypeInfo", b""), "UNIMPLEMENTED"),
        (wrap("CommandNoSuchThing", b""), "UNIMPLEMENTED"),
    ],
)
def test_malformed_commands_are_invalid_arguments(
    server: ArrowportProcess, command: bytes, code: str
) -> None:
    descriptor = flight.FlightDescriptor.for_command(command)
    with flight.connect(server.flight_url) as client:
        got, message = flight_error(lambda: client.get_flight_info(descriptor))
        assert got == code, message
        if code == "INVALID_ARGUMENT":  # the command as a ticket too
            got, message = flight_error(lambda: client.do_get(flight.Ticket(command)).read_all())
            assert got == code, message


def test_key_commands_answer_no_rows(server: ArrowportProcess) -> None:
    commands = [
        sql.CommandGetPrimaryKeys(table=b"t"),
        sql.CommandGetExportedKeys(table=b"t", db_schema=b"main"),
        sql.CommandGetImportedKeys(table=b"t"),
        sql.CommandGetCrossReference(pk_table=b"a", fk_table=b"b"),
    ]
    with flight.connect(server.flight_url) as client:
        for cmd in commands:
            info = client.get_flight_info(flight.FlightDescriptor.for_command(pack(cmd)))
            assert client.do_get(info.endpoints[0].ticket).read_all().num_rows == 0


BAD_PATTERNS = {
    "lone_escape": sql.CommandGetTables(table_name_filter_pattern=b"\\"),
    "trailing_escape": sql.CommandGetTables(table_name_filter_pattern=b"sq_like\\"),
    # An escaped \, then a lone one.
    "escape_after_backslash": sql.CommandGetTables(db_schema_filter_pattern=b"m\\\\\\"),
    "too_long": sql.CommandGetTables(table_name_filter_pattern=b"%" * 1025),
    "schema_pattern": sql.CommandGetDbSchemas(db_schema_filter_pattern=b"%\\"),
}


@pytest.mark.parametrize("cmd", BAD_PATTERNS.values(), ids=BAD_PATTERNS.keys())
def test_a_like_pattern_that_escapes_nothing_is_an_invalid_argument(
    server: ArrowportProcess, cmd: sql.CommandGetTables | sql.CommandGetDbSchemas
) -> None:
    """Refused by GetFlightInfo and GetSchema already, and by a DoGet of the command itself
    (DuckDB's LIKE failed such a pattern: INTERNAL)."""
    descriptor = flight.FlightDescriptor.for_command(pack(cmd))
    with flight.connect(server.flight_url) as client:
        calls = [
            lambda: client.get_flight_info(descriptor),
            lambda: client.get_schema(descriptor),
            lambda: client.do_get(flight.Ticket(pack(cmd))).read_all(),
        ]
        for call in calls:
            code, message = flight_error(call)
            assert code == "INVALID_ARGUMENT", message
            assert message.startswith("invalid_options: "), message
            assert "_filter_pattern " in message, message
    assert server.healthy()


def test_adbc_get_objects_with_a_pattern_that_escapes_nothing_is_an_invalid_argument(
    conn: dbapi.Connection, server: ArrowportProcess
) -> None:
    ingest(conn, "sq_like_one", rows(1), "create")
    ingest(conn, "sq_likexone", rows(1), "create")
    calls = [
        lambda: conn.adbc_get_objects(table_name_filter="sq_like\\").read_all(),
        lambda: conn.adbc_get_objects(db_schema_filter="%\\").read_all(),
    ]
    for call in calls:
        status, message = adbc_error(call)
        assert status == AdbcStatusCode.INVALID_ARGUMENT, message
        assert "invalid_options: " in message, message
    # An escaped _ is the character itself.
    objects = conn.adbc_get_objects(table_name_filter="sq\\_like\\_%").read_all().to_pylist()
    schemas = objects[0]["catalog_db_schemas"]
    names = [t["table_name"] for s in schemas for t in s["db_schema_tables"]]
    assert names == ["sq_like_one"]
    assert server.healthy()


def test_a_pattern_that_would_make_like_backtrack_is_answered_at_once(
    conn: dbapi.Connection, server: ArrowportProcess
) -> None:
    """DuckDB's LIKE backtracks: this pattern against this name ran for minutes (and held a
    thread that no timeout stops)."""
    name = "sq_" + "a" * 60
    ingest(conn, name, rows(1), "create")
    cmd = sql.CommandGetTables(table_name_filter_pattern=b"%a" * 12 + b"%x")
    options = flight.FlightCallOptions(timeout=20)
    with flight.connect(server.flight_url) as client:
        started = time.monotonic()
        found = client.do_get(flight.Ticket(pack(cmd)), options).read_all()
        assert found.num_rows == 0
        cmd = sql.CommandGetTables(table_name_filter_pattern=b"%a" * 12 + b"%")
        found = client.do_get(flight.Ticket(pack(cmd)), options).read_all()
        assert name in found.column("table_name").to_pylist()
        assert time.monotonic() - started < 10
    assert server.healthy()


def test_a_parameter_batch_over_the_query_limit_names_that_limit(server: ArrowportProcess) -> None:
    request = sql.ActionCreatePreparedStatementRequest(query=b"SELECT length(?) AS n")
    with flight.connect(server.flight_url) as client:
        action = flight.Action("CreatePreparedStatement", pack(request))
        [answer] = list(client.do_action(action))
        _, body = unpack(answer.body.to_pybytes(), "the answer")
        created = sql.ActionCreatePreparedStatementResult.FromString(body)
        cmd = sql.CommandPreparedStatementQuery(
            prepared_statement_handle=created.prepared_statement_handle
        )

        def bind(table: pa.Table) -> None:
            descriptor = flight.FlightDescriptor.for_command(pack(cmd))
            writer, reader = client.do_put(descriptor, table.schema)
            writer.write_table(table)
            writer.done_writing()
            reader.read()
            writer.close()

        code, message = flight_error(lambda: bind(pa.table({"p": ["x" * 1_100_000]})))
        assert code == "RESOURCE_EXHAUSTED", message
        assert message.startswith(
            "payload_too_large: the bound parameters decode to more than 1048576 bytes "
            "(limits.max_query_body_bytes)"
        ), message
        bind(pa.table({"p": ["x" * 1000]}))  # the statement still takes sane ones
        info = client.get_flight_info(flight.FlightDescriptor.for_command(pack(cmd)))
        assert client.do_get(info.endpoints[0].ticket).read_all().to_pylist() == [{"n": 1000}]
    assert server.healthy()


def test_a_long_error_message_keeps_its_status_and_code(
    server: ArrowportProcess, conn: dbapi.Connection
) -> None:
    """DuckDB quotes the query back: a pyarrow client refuses a status over 16 KiB."""
    query_text = "SELECT " + "x" * 30_000
    descriptor = flight.FlightDescriptor.for_command(
        pack(sql.CommandStatementQuery(query=query_text.encode()))
    )
    with flight.connect(server.flight_url) as client:
        code, message = flight_error(lambda: client.get_flight_info(descriptor))
    assert code == "INVALID_ARGUMENT", message
    assert message.startswith("query_error: "), message
    assert len(message.encode()) <= 4096
    status, message = adbc_error(lambda: fetch(conn, query_text))
    assert status == AdbcStatusCode.INVALID_ARGUMENT, message
    assert "query_error: " in message
    assert server.healthy()


def test_unknown_handles_and_unserved_actions(server: ArrowportProcess) -> None:
    close = pack(sql.ActionClosePreparedStatementRequest(prepared_statement_handle=b"nope"))
    cases = [
        (flight.Action("ClosePreparedStatement", close), "NOT_FOUND"),
        (flight.Action("GetSessionOptions", b""), "UNIMPLEMENTED"),
        (flight.Action("BeginTransaction", b"junk"), "INVALID_ARGUMENT"),
    ]
    with flight.connect(server.flight_url) as client:
        for action, code in cases:
            assert flight_error(lambda a=action: list(client.do_action(a)))[0] == code  # type: ignore[misc]
        ticket = flight.Ticket(pack(sql.TicketStatementQuery(statement_handle=b"x" * 32)))
        assert flight_error(lambda: client.do_get(ticket).read_all())[0] == "NOT_FOUND"
        types = {a.type for a in client.list_actions()}
        assert {"producer_offset", "CreatePreparedStatement", "BeginTransaction"} <= types


def test_ending_a_handle_the_server_does_not_hold_is_a_no_op_but_using_it_is_not_found(
    server: ArrowportProcess,
) -> None:
    """A well-formed handle this process does not hold (never issued here, or by an earlier
    process of the server) ends as a no-op, and using it is NOT_FOUND; a byte string of no
    handle's shape is refused, saying so."""
    stranger = b"x" * 32
    rollback = sql.ActionEndTransactionRequest.END_TRANSACTION_ROLLBACK
    options = flight.FlightCallOptions()
    with flight.connect(server.flight_url) as client:
        end(client, options, stranger)
        close = sql.ActionClosePreparedStatementRequest(prepared_statement_handle=stranger)
        assert do(client, options, "ClosePreparedStatement", close) is None
        code, message = flight_error(lambda: ask(client, options, "SELECT 1 AS one", stranger))
        assert code == "NOT_FOUND", message
        assert message.startswith(
            "unknown_handle: unknown transaction handle: this server process never issued it"
        ), message
        junk = sql.ActionEndTransactionRequest(transaction_id=b"junk", action=rollback)
        code, message = flight_error(lambda: do(client, options, "EndTransaction", junk))
        assert (code, message) == (
            "NOT_FOUND",
            "unknown_handle: not a transaction handle of this server: its handles are 32 bytes, "
            "this one is 4",
        )
        close = sql.ActionClosePreparedStatementRequest(prepared_statement_handle=b"nope")
        code, message = flight_error(lambda: do(client, options, "ClosePreparedStatement", close))
        assert code == "NOT_FOUND", message
        assert message.startswith("unknown_handle: not a prepared statement handle"), message


def test_a_manual_commit_connection_carries_on_after_the_server_restarts(tmp_path: Path) -> None:
    """Transactions and prepared statements live in the server's process. After a restart (same
    database, same ports) the connection's next query is told its transaction is unknown;
    closing a cursor prepared before and rolling back are no-ops that succeed, and the driver
    then begins a new transaction in which the connection goes on reading."""
    ports = ["--port", str(free_port()), "--flight-port", str(free_port())]
    server = ArrowportProcess(tmp_path, args=ports)
    with server, dbapi.connect(server.flight_url) as conn:
        ingest(conn, "kept", rows(3), "create")
        cursor = conn.cursor()
        cursor.execute("SELECT count(*) AS n FROM kept")
        assert cursor.fetch_arrow_table().to_pylist() == [{"n": 3}]
        server.stop()
        server.start()
        status, message = adbc_error(lambda: fetch(conn, "SELECT count(*) AS n FROM kept"))
        assert status == AdbcStatusCode.NOT_FOUND, message
        assert "unknown_handle: unknown transaction handle" in message
        cursor.close()  # its statement was prepared by the earlier process
        conn.rollback()
        assert fetch(conn, "SELECT count(*) AS n FROM kept").to_pylist() == [{"n": 3}]
        ingest(conn, "kept", rows(3), "append")
        conn.commit()
        assert fetch(conn, "SELECT count(*) AS n FROM kept").to_pylist() == [{"n": 6}]


def flight_errors(http: httpx.Client) -> float:
    """Every Flight call refused so far (``arrowport_errors_total``, all codes)."""
    lines = http.get("/metrics").text.splitlines()
    counted = (line for line in lines if line.startswith("arrowport_errors_total{"))
    return sum(float(line.rsplit(" ", 1)[1]) for line in counted if 'protocol="flight"' in line)


def test_closing_a_connection_closes_its_session_without_an_error(
    server: ArrowportProcess, http: httpx.Client
) -> None:
    """The ADBC driver sends Flight's CloseSession as a connection closes: it is served (CLOSED;
    the server keeps no session), so a normal close is no refusal, counted or logged."""
    before, logged = flight_errors(http), len(server.lines)
    connection = dbapi.connect(server.flight_url)
    assert fetch(connection, "SELECT 1 AS one").to_pylist() == [{"one": 1}]
    connection.close()
    with dbapi.connect(server.flight_url, autocommit=True) as connection:
        assert fetch(connection, "SELECT 2 AS two").to_pylist() == [{"two": 2}]
    assert flight_errors(http) == before
    assert not [line for line in server.lines[logged:] if "flight request refused" in line]
    with flight.connect(server.flight_url) as client:
        results = list(client.do_action(flight.Action("CloseSession", b"")))
        assert len(results) == 1
        result = flight_pb2.CloseSessionResult.FromString(results[0].body.to_pybytes())
        assert result.status == flight_pb2.CloseSessionResult.CLOSED
        assert "CloseSession" in {action.type for action in client.list_actions()}


def test_an_answer_nobody_fetches_gives_its_turn_to_a_waiting_query(tmp_path: Path) -> None:
    """GetFlightInfo runs a query whose answer waits, holding its turn, for the DoGet; a client
    that never comes for it holds that turn only until another query needs it, and then only
    for a few seconds (not the answer's whole idle minute). The late DoGet is NOT_FOUND."""
    config = {"limits": {"max_concurrent_queries": 1, "max_queued_queries": 1}}
    with (
        ArrowportProcess(tmp_path, config=config) as server,
        flight.connect(server.flight_url) as client,
        httpx.Client(base_url=server.url, timeout=30) as http,
    ):
        command = pack(sql.CommandStatementQuery(query=b"SELECT 42 AS answer"))
        info = client.get_flight_info(flight.FlightDescriptor.for_command(command))
        asked = time.monotonic()
        # The only turn is the unfetched answer's: this query waits, then takes it.
        assert query(http, "SELECT 7 AS other").to_pylist() == [{"other": 7}]
        assert time.monotonic() - asked < 25  # well before the answer's idle minute
        ticket = info.endpoints[0].ticket
        code, message = flight_error(lambda: client.do_get(ticket).read_all())
        assert code == "NOT_FOUND"
        assert "no longer open" in message
        assert "waited for its turn" in message
        # With nobody waiting, an answer is kept for its DoGet past those few seconds.
        info = client.get_flight_info(flight.FlightDescriptor.for_command(command))
        time.sleep(ANSWER_TURN_SECONDS + 1)
        fetched = client.do_get(info.endpoints[0].ticket).read_all()
        assert fetched.to_pylist() == [{"answer": 42}]


# -- bounds on what clients leave on the server ----------------------------------------------------


def do(client: flight.FlightClient, options: flight.FlightCallOptions, kind: str, body: Any) -> Any:
    """A Flight SQL action's one result (its ``Any`` unpacked), or None for none."""
    results = list(client.do_action(flight.Action(kind, pack(body)), options))
    if not results:
        return None
    _, value = unpack(results[0].body.to_pybytes(), "the result")
    return value


def begin(client: flight.FlightClient, options: flight.FlightCallOptions) -> bytes:
    value = do(client, options, "BeginTransaction", sql.ActionBeginTransactionRequest())
    return sql.ActionBeginTransactionResult.FromString(value).transaction_id


def end(client: flight.FlightClient, options: flight.FlightCallOptions, txn: bytes) -> None:
    rollback = sql.ActionEndTransactionRequest.END_TRANSACTION_ROLLBACK
    request = sql.ActionEndTransactionRequest(transaction_id=txn, action=rollback)
    do(client, options, "EndTransaction", request)


def ask(
    client: flight.FlightClient,
    options: flight.FlightCallOptions,
    query_text: str,
    txn: bytes | None = None,
) -> flight.FlightInfo:
    """GetFlightInfo of a ``CommandStatementQuery`` (in ``txn``): the query runs, its answer
    waits for the ticket's DoGet."""
    cmd = sql.CommandStatementQuery(query=query_text.encode(), transaction_id=txn)
    return client.get_flight_info(flight.FlightDescriptor.for_command(pack(cmd)), options)


def bearer(name: str) -> flight.FlightCallOptions:
    return flight.FlightCallOptions(
        headers=[(b"authorization", f"Bearer {SECRETS[name]}".encode())]
    )


def open_files(pid: int, directory: Path) -> int:
    """Files in ``directory`` that process ``pid`` holds open. A spool file is removed from the
    directory as it is made; its room on disk is given back once it is closed."""
    held = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = str(fd.readlink())
        except OSError:  # closed meanwhile
            continue
        held += target.startswith(f"{directory}/")
    return held


# An answer of about n KB (past a MiB, its spool is a file).
WIDE = "SELECT i, repeat('x', 1000) AS s FROM range({n}) t(i)"


def test_unfetched_answers_in_transactions_cannot_fill_the_spool(tmp_path: Path) -> None:
    """Answers of queries in a transaction are read whole into spools before their DoGet; all
    of them together are held to flight.max_spooled_answer_bytes (RESOURCE_EXHAUSTED
    result_too_large beyond), and a fetched or refused answer's spool is deleted and its bytes
    given back."""
    spool = tmp_path / "spool"
    spool.mkdir()
    limit = 5 * 1024**2
    config = {
        "flight": {
            "max_spooled_answer_bytes": limit,
            "spool_dir": str(spool),
            "max_transactions_per_client": 2,
        }
    }
    with (
        ArrowportProcess(tmp_path / "server", config=config) as server,
        flight.connect(server.flight_url) as client,
        httpx.Client(base_url=server.url, timeout=30) as http,
    ):
        assert server.proc is not None
        pid = server.proc.pid
        options = flight.FlightCallOptions()
        txn = begin(client, options)
        assert metric(http, "arrowport_spooled_answer_bytes") == 0
        waiting = [ask(client, options, WIDE.format(n=2000), txn) for _ in range(2)]
        held = metric(http, "arrowport_spooled_answer_bytes")
        assert 2 * 2_000_000 < held <= limit  # two answers of ~2 MB each, in files
        assert open_files(pid, spool) == 2
        code, message = flight_error(lambda: ask(client, options, WIDE.format(n=2000), txn))
        assert code == "RESOURCE_EXHAUSTED", message
        assert message.startswith(
            f"result_too_large: the answers waiting to be fetched would take more than {limit} "
            "bytes (flight.max_spooled_answer_bytes)"
        ), message
        # The refused answer's spool is gone, its bytes given back; the transaction goes on.
        assert metric(http, "arrowport_spooled_answer_bytes") == held
        assert open_files(pid, spool) == 2
        fetched = client.do_get(waiting[0].endpoints[0].ticket, options).read_all()
        assert fetched.num_rows == 2000
        assert metric(http, "arrowport_spooled_answer_bytes") == pytest.approx(held / 2, rel=0.01)
        assert open_files(pid, spool) == 1
        again = ask(client, options, WIDE.format(n=2000), txn)  # room again
        for info in (waiting[1], again):
            assert client.do_get(info.endpoints[0].ticket, options).read_all().num_rows == 2000
        assert metric(http, "arrowport_spooled_answer_bytes") == 0
        assert open_files(pid, spool) == 0
        # One answer over the whole room is refused however empty it is; small ones still fit.
        code, message = flight_error(lambda: ask(client, options, WIDE.format(n=6000), txn))
        assert code == "RESOURCE_EXHAUSTED", message
        assert message.startswith("result_too_large: "), message
        small = ask(client, options, "SELECT 42 AS answer", txn)
        assert client.do_get(small.endpoints[0].ticket, options).read_all().to_pylist() == [
            {"answer": 42}
        ]
        # Anonymous callers are one client: this connection's transaction counts for another's.
        with flight.connect(server.flight_url) as other:
            reading = begin(other, options)  # with a snapshot: not given up for a new one
            info = ask(other, options, "SELECT 1 AS one", reading)
            assert other.do_get(info.endpoints[0].ticket, options).read_all().num_rows == 1
            code, message = flight_error(lambda: begin(other, options))
            assert code == "RESOURCE_EXHAUSTED", message
            assert "flight.max_transactions_per_client (2)" in message
        end(client, options, txn)
        assert metric(http, "arrowport_spooled_answer_bytes") == 0
        assert open_files(pid, spool) == 0
        assert server.healthy()


def test_a_dropped_or_refused_spooled_answer_gives_its_room_back(
    db: Database, tmp_path: Path
) -> None:
    """Every way an answer leaves the table deletes its spool and gives its bytes back: fetched,
    swept unfetched, refused by a full table or a full room, or closed with the server."""
    db.write_one(WriteJob("spooled", WritePolicy(), pa.table({"k": list(range(50_000))})))
    spool = tmp_path / "spool"
    spool.mkdir()
    snapshot = Snapshot(db)
    query_text = "SELECT k, repeat('y', 100) AS s FROM spooled"

    def spooled(answers: Answers) -> Spooled:
        with snapshot.query(query_text, None) as found:
            return answers.spooled(found, ResultBudget(2**40))

    def held(answers: Answers) -> tuple[int, int]:
        """The room ``answers`` hold, and the spool files open."""
        return answers.room.used, open_files(os.getpid(), spool)

    answers = Answers(64 * 1024**2, str(spool))
    handle = answers.add("alice", spooled(answers))
    size, files = held(answers)
    assert size > 5_000_000
    assert files == 1
    taken = answers.take(handle, "alice")
    assert sum(batch.num_rows for batch in taken.batches(ResultBudget(2**40))) == 50_000
    assert held(answers) == (0, 0)
    answers.add("alice", spooled(answers))
    answers.held.sweep(now=time.monotonic() + ANSWER_IDLE_SECONDS + 1)
    assert held(answers) == (0, 0)
    answers.add("alice", spooled(answers))
    answers.close()
    assert held(answers) == (0, 0)
    full = Answers(64 * 1024**2, str(spool))
    full.held.capacity = 0
    with pytest.raises(Overloaded):
        full.add("alice", spooled(full))
    assert held(full) == (0, 0)
    small = Answers(1024**2, str(spool))
    with pytest.raises(ResultTooLarge, match=r"\(flight.max_spooled_answer_bytes\)"):
        spooled(small)
    assert held(small) == (0, 0)
    snapshot.close()


BOUNDED: dict[str, Any] = SECURED | {
    "flight": {"max_transactions_per_client": 3, "max_prepared_statements_per_client": 2}
}


def test_one_client_cannot_take_other_clients_transactions(tmp_path: Path) -> None:
    """Each client (token) holds at most flight.max_transactions_per_client open transactions;
    one more, when every one it holds has a snapshot, is refused, RESOURCE_EXHAUSTED naming that
    bound. Nobody's transaction is forgotten to make room for another client's, so another
    client's goes on reading its snapshot."""
    basic = {"username": "root", "password": SECRETS["root"]}
    with (
        ArrowportProcess(tmp_path / "server", config=BOUNDED) as server,
        flight.connect(server.flight_url) as client,
        dbapi.connect(server.flight_url, db_kwargs=basic, autocommit=True) as loader,
    ):
        reader, root = bearer("reader"), bearer("root")
        ingest(loader, "bounded", rows(3), "create")
        theirs = begin(client, root)
        before = ask(client, root, "SELECT count(*) AS n FROM bounded", theirs)
        assert client.do_get(before.endpoints[0].ticket, root).read_all()["n"].to_pylist() == [3]
        mine = [begin(client, reader) for _ in range(3)]
        for txn in mine:  # each takes its snapshot: none is given up for a new one
            info = ask(client, reader, "SELECT 1 AS one", txn)
            assert client.do_get(info.endpoints[0].ticket, reader).read_all().num_rows == 1
        for _ in range(5):
            code, message = flight_error(lambda: begin(client, reader))
            assert code == "RESOURCE_EXHAUSTED", message
            assert message.startswith(
                "overloaded: this client already holds 3 open transactions, as many as "
                "flight.max_transactions_per_client (3) allows: each holds a snapshot or runs a "
                "query: end one"
            ), message
            # Retrying helps only once an idle snapshot is given up: the hint says when.
            tail = r"given up, 300 s after its last query \(retry after 30[0-5] s\)$"
            assert re.search(tail, message), message
        ingest(loader, "bounded", rows(3), "append")
        # The other client's transaction is still open, on its snapshot (before the ingest).
        after = ask(client, root, "SELECT count(*) AS n FROM bounded", theirs)
        assert client.do_get(after.endpoints[0].ticket, root).read_all()["n"].to_pylist() == [3]
        # Its own are untouched too; ending one makes room for another.
        for txn in mine:
            info = ask(client, reader, "SELECT 1 AS one", txn)
            assert client.do_get(info.endpoints[0].ticket, reader).read_all().num_rows == 1
        end(client, reader, mine.pop())
        mine.append(begin(client, reader))
        info = ask(client, reader, "SELECT 1 AS one", mine[-1])
        assert client.do_get(info.endpoints[0].ticket, reader).read_all().num_rows == 1
        flight_error(lambda: begin(client, reader))
        end(client, root, theirs)
        # An ADBC connection of the other client begins one as it connects, and reads in it.
        with dbapi.connect(server.flight_url, db_kwargs=basic) as conn:
            assert fetch(conn, "SELECT count(*) AS n FROM bounded").to_pylist() == [{"n": 6}]
        assert server.healthy()


def test_connections_that_never_end_their_transaction_do_not_lock_their_client_out(
    tmp_path: Path,
) -> None:
    """The ADBC driver's connection, in its default mode, begins a transaction as it connects
    and, closed, never ends it. A client at flight.max_transactions_per_client that begins
    another gives up its own least recently used one that holds no snapshot: connecting again
    and again goes on working, and a connection still reading keeps its transaction."""
    basic = {"username": "root", "password": SECRETS["root"]}
    with (
        ArrowportProcess(tmp_path / "server", config=BOUNDED) as server,
        dbapi.connect(server.flight_url, db_kwargs=basic, autocommit=True) as loader,
    ):
        ingest(loader, "kept", rows(3), "create")
        with dbapi.connect(server.flight_url, db_kwargs=basic) as reading:
            assert fetch(reading, "SELECT count(*) AS n FROM kept").to_pylist() == [{"n": 3}]
            for _ in range(10):  # each connects, begins one, reads nothing, never ends it
                with dbapi.connect(server.flight_url, db_kwargs=basic):
                    pass
            ingest(loader, "kept", rows(3), "append")
            # Still its transaction's snapshot, from before the append.
            assert fetch(reading, "SELECT count(*) AS n FROM kept").to_pylist() == [{"n": 3}]
            reading.commit()
            assert fetch(reading, "SELECT count(*) AS n FROM kept").to_pylist() == [{"n": 6}]
        assert server.healthy()


def test_one_client_cannot_take_every_prepared_statement(tmp_path: Path) -> None:
    """Each client holds at most flight.max_prepared_statements_per_client open statements;
    preparing one more is refused, RESOURCE_EXHAUSTED naming that bound, and another client
    still prepares and runs its own."""
    with (
        ArrowportProcess(tmp_path / "server", config=BOUNDED) as server,
        flight.connect(server.flight_url) as client,
    ):
        reader, root = bearer("reader"), bearer("root")

        def prepare(options: flight.FlightCallOptions) -> bytes:
            request = sql.ActionCreatePreparedStatementRequest(query=b"SELECT 7 AS seven")
            value = do(client, options, "CreatePreparedStatement", request)
            return sql.ActionCreatePreparedStatementResult.FromString(
                value
            ).prepared_statement_handle

        def run(options: flight.FlightCallOptions, handle: bytes) -> list[dict[str, Any]]:
            cmd = sql.CommandPreparedStatementQuery(prepared_statement_handle=handle)
            descriptor = flight.FlightDescriptor.for_command(pack(cmd))
            info = client.get_flight_info(descriptor, options)
            return client.do_get(info.endpoints[0].ticket, options).read_all().to_pylist()

        theirs = prepare(root)
        mine = [prepare(reader), prepare(reader)]
        code, message = flight_error(lambda: prepare(reader))
        assert code == "RESOURCE_EXHAUSTED", message
        assert message.startswith(
            "overloaded: this client already holds 2 open prepared statements, as many as "
            "flight.max_prepared_statements_per_client (2) allows: close some"
        ), message
        assert run(root, theirs) == [{"seven": 7}]
        assert [run(reader, handle) for handle in mine] == [[{"seven": 7}]] * 2
        close = sql.ActionClosePreparedStatementRequest(prepared_statement_handle=mine.pop())
        do(client, reader, "ClosePreparedStatement", close)
        assert run(reader, prepare(reader)) == [{"seven": 7}]
        assert server.healthy()


STATUS_MESSAGE = re.compile(r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)*: \S")
CLIENT_CODES = {
    "INVALID_ARGUMENT",
    "NOT_FOUND",
    "UNIMPLEMENTED",
    "PERMISSION_DENIED",
    "FAILED_PRECONDITION",
    "ALREADY_EXISTS",
    "RESOURCE_EXHAUSTED",
}
NAMES = [
    "CommandGetSqlInfo",
    "CommandGetCatalogs",
    "CommandGetDbSchemas",
    "CommandGetTables",
    "CommandGetTableTypes",
    "CommandGetPrimaryKeys",
    "CommandStatementQuery",
    "CommandPreparedStatementQuery",
    "CommandStatementUpdate",
    "CommandStatementIngest",
    "TicketStatementQuery",
    "ActionCreatePreparedStatementRequest",
    "ActionEndTransactionRequest",
]


def random_command(rng: random.Random) -> bytes:
    body = rng.randbytes(rng.randrange(0, 24))
    if rng.random() < 0.3:
        return b"\x0a" + body
    return wrap(rng.choice(NAMES), body)


def test_random_flight_sql_requests_get_client_errors_and_the_server_stays_up(
    server: ArrowportProcess, http: httpx.Client
) -> None:
    rng = random.Random(7)
    actions = ["CreatePreparedStatement", "ClosePreparedStatement", "EndTransaction"]
    with flight.connect(server.flight_url) as client:
        calls: list[Callable[[], object]] = []
        for _ in range(60):
            command = random_command(rng)
            descriptor = flight.FlightDescriptor.for_command(command)
            calls += [
                lambda d=descriptor: client.get_flight_info(d),  # type: ignore[misc]
                lambda d=descriptor: client.get_schema(d),  # type: ignore[misc]
                lambda c=command: client.do_get(flight.Ticket(c)).read_all(),  # type: ignore[misc]
                lambda c=command: list(  # type: ignore[misc]
                    client.do_action(flight.Action(rng.choice(actions), c))
                ),
                lambda d=descriptor: put_any(client, d),  # type: ignore[misc]
            ]
        for call in calls:
            try:
                call()
            except pa.ArrowException as exc:
                code, message = grpc_error(exc)
                assert code in CLIENT_CODES, (code, message)
                assert STATUS_MESSAGE.match(message), message
    assert http.get("/health").status_code == 200
    alarms = [line for line in server.lines if "unexpected error" in line or "Traceback" in line]
    assert alarms == []


def put_any(client: flight.FlightClient, descriptor: flight.FlightDescriptor) -> None:
    writer, reader = client.do_put(descriptor, rows(3).schema)
    writer.write_table(rows(3))
    writer.done_writing()
    reader.read()
    writer.close()


# -- polars ----------------------------------------------------------------------------------------------


def test_polars_writes_and_reads_through_adbc(conn: dbapi.Connection, http: httpx.Client) -> None:
    frame = pl.DataFrame({"id": [1, 2, 3], "name": ["a", "b", None], "score": [0.5, 1.5, 2.5]})
    assert frame.write_database("sq_polars", connection=conn, engine="adbc") == 3
    frame.write_database("sq_polars", connection=conn, engine="adbc", if_table_exists="append")
    assert count(http, "sq_polars") == 6
    back = pl.read_database("SELECT * FROM sq_polars ORDER BY id, name LIMIT 3", connection=conn)
    assert back["id"].to_list() == [1, 1, 2]
    assert back["name"].to_list() == ["a", "a", "b"]


# -- in process: storage and registries ------------------------------------------------------------------


def test_write_table_never_creates_when_told_not_to(db: Database) -> None:
    data = pa.table({"k": [1, 2]})
    append_only = WritePolicy(create_missing=False)
    with pytest.raises(UnknownTable):
        db.write_one(WriteJob("unit", append_only, data))
    with pytest.raises(UnknownTable):
        db.write_one(WriteJob("unit", WritePolicy(mode="replace", create_missing=False), data))
    assert db.write_one(WriteJob("unit", WritePolicy(), data)).created
    assert db.write_one(WriteJob("unit", append_only, data)).rows == 2
    assert db.table("unit").row_count == 4


def test_metadata_lists_main_tables_with_like_patterns(db: Database) -> None:
    for name in ("ab_c", "abxc", "other"):
        db.write_one(WriteJob(name, WritePolicy(), pa.table({"k": [1]})))
    assert [t.name for t in metadata.tables(db)] == ["ab_c", "abxc", "other"]
    assert [t.name for t in metadata.tables(db, table_pattern="ab_c")] == ["ab_c", "abxc"]
    assert [t.name for t in metadata.tables(db, table_pattern="ab\\_c")] == ["ab_c"]
    assert metadata.tables(db, schema_pattern="_arrowport") == []
    found = metadata.tables(db, table_pattern="oth%", with_schemas=True)
    assert found[0].arrow_schema is not None
    assert found[0].arrow_schema.names == ["k"]
    assert [s.schema for s in metadata.db_schemas(db, "m%")] == ["main"]
    assert metadata.db_schemas(db, "x%") == []
    assert metadata.describe_query(db, "SELECT k FROM other WHERE k > ? AND k < $2").parameters == (
        "1",
        "2",
    )


def test_like_patterns_match_as_duckdb_like_does_and_refuse_a_lone_escape() -> None:
    connection = duckdb.connect()
    rng = random.Random(11)
    compared = 0
    for _ in range(5000):
        pattern = "".join(rng.choice("ab_%\\\u00e9") for _ in range(rng.randrange(9)))
        name = "".join(rng.choice("ab_%\\\u00e9") for _ in range(rng.randrange(9)))
        if (len(pattern) - len(pattern.rstrip("\\"))) % 2:  # a lone \ at the end
            with pytest.raises(InvalidOptions, match="ends with the escape character"):
                metadata.LikePattern(pattern, "the pattern")
            continue
        matcher = metadata.LikePattern(pattern, "the pattern")
        like = connection.execute("SELECT ? LIKE ? ESCAPE '\\'", [name, pattern]).fetchone()
        assert like is not None
        assert matcher.matches(name) == like[0], (pattern, name)
        compared += 1
    assert compared > 3000
    with pytest.raises(InvalidOptions):
        metadata.LikePattern("x" * 1025, "the pattern")


def test_a_snapshot_keeps_its_view_and_refuses_queries_once_aborted(db: Database) -> None:
    db.write_one(WriteJob("snap", WritePolicy(), pa.table({"k": [1]})))
    snapshot = Snapshot(db)

    def total() -> int:
        with snapshot.query("SELECT count(*) AS n FROM snap", None) as found:
            return int(pa.Table.from_batches(list(found.batches), found.schema)["n"][0].as_py())

    assert total() == 1
    db.write_one(WriteJob("snap", WritePolicy(), pa.table({"k": [2]})))
    assert total() == 1
    with (
        pytest.raises(QueryError, match=r"query failed: Conversion Error"),
        snapshot.query("SELECT 'x'::INTEGER", None) as failing,
    ):
        list(failing.batches)
    with pytest.raises(TransactionAborted):
        total()
    snapshot.close()


def test_transactions_take_snapshots_lazily_and_give_up_the_least_recently_used(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transactions, "MAX_SNAPSHOTS", 1)
    db.write_one(WriteJob("txn", WritePolicy(), pa.table({"k": [1]})))
    held = transactions.Transactions(lambda: Snapshot(db), per_client=8)

    def read(txn: transactions.Transaction) -> int:
        with held.query(txn, "SELECT count(*) AS n FROM txn", None) as found:
            return len(list(found.batches))

    first, second = held.begin("alice"), held.begin("alice")
    assert held.get(first, "alice").snapshot is None  # nothing held before the first query
    assert read(held.get(first, "alice")) == 1
    assert read(held.get(second, "alice")) == 1  # takes the one snapshot from the first
    with pytest.raises(TransactionAborted, match="given up"):
        read(held.get(first, "alice"))
    held.end(first, "alice")
    held.end(first, "alice")  # ending what the server no longer holds: nothing to do
    with pytest.raises(UnknownHandle):
        held.end(b"never issued", "alice")
    with pytest.raises(UnknownHandle):
        held.get(second, "bob")
    held.close()


def test_a_client_refused_a_transaction_is_told_when_room_comes(db: Database) -> None:
    """At flight.max_transactions_per_client with a snapshot in each, no transaction is given
    up for a new one: the refusal says to end one, or when the snapshot idle the longest is given
    up (after SNAPSHOT_IDLE_SECONDS unused, at the next sweep), and its retry hint is that time,
    not a second."""
    db.write_one(WriteJob("room", WritePolicy(), pa.table({"k": [1]})))
    held = transactions.Transactions(lambda: Snapshot(db), per_client=2, sweep_seconds=5)
    txns = [held.get(held.begin("alice"), "alice") for _ in range(2)]
    for txn in txns:
        with held.query(txn, "SELECT count(*) AS n FROM room", None) as found:
            list(found.batches)
    with pytest.raises(ClientQuotaExceeded) as refused:
        held.begin("alice")
    assert refused.value.retry_after == 305
    assert refused.value.message.endswith(
        "allows: each holds a snapshot or runs a query: end one (commit or roll back) to begin "
        "another, or retry once the snapshot of one left idle is given up, 300 s after its last "
        "query"
    ), refused.value.message
    txns[1].used -= 200  # idle for 200 s: given up 100 s from now, at the next sweep
    with pytest.raises(ClientQuotaExceeded) as refused:
        held.begin("alice")
    assert refused.value.retry_after == 105
    held.close()


def test_a_transaction_given_up_while_its_query_waited_opens_no_snapshot(db: Database) -> None:
    """A query got its transaction, then waited for its turn; meanwhile its client, at its
    bound, began another and gave that transaction (no snapshot yet) up. The query is refused,
    and no snapshot is left open for a transaction nobody holds."""
    db.write_one(WriteJob("waited", WritePolicy(), pa.table({"k": [1]})))
    opened: list[Snapshot] = []

    def open_snapshot() -> Snapshot:
        opened.append(Snapshot(db))
        return opened[-1]

    held = transactions.Transactions(open_snapshot, per_client=1)
    first = held.begin("alice")
    waiting = held.get(first, "alice")  # the query has it, and waits for its turn
    held.begin("alice")  # gives the first up: it holds no snapshot
    with pytest.raises(UnknownHandle):
        held.get(first, "alice")
    with (
        pytest.raises(TransactionAborted, match="ended while this query waited"),
        held.query(waiting, "SELECT count(*) AS n FROM waited", None),
    ):
        pass
    assert opened == []
    held.close()


def test_a_client_takes_snapshots_only_from_a_client_holding_more(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With every snapshot taken, a new one gives up an idle one of the client holding the most
    (counting the one being taken), its least recently used: one client opening many cannot
    take the one another holds, and is refused none of its own."""
    monkeypatch.setattr(transactions, "MAX_SNAPSHOTS", 3)
    db.write_one(WriteJob("share", WritePolicy(), pa.table({"k": [1]})))
    held = transactions.Transactions(lambda: Snapshot(db), per_client=8)

    def read(handle: bytes, owner: str) -> int:
        with held.query(held.get(handle, owner), "SELECT count(*) AS n FROM share", None) as found:
            return len(list(found.batches))

    bobs = held.begin("bob")
    assert read(bobs, "bob") == 1  # bob's one snapshot, the oldest of all
    alices = [held.begin("alice") for _ in range(4)]
    for handle in alices:
        assert read(handle, "alice") == 1
    assert read(bobs, "bob") == 1  # still his: alice gave up her own least recently used
    with pytest.raises(TransactionAborted, match="given up"):
        read(alices[0], "alice")
    assert read(alices[2], "alice") == 1
    assert read(alices[3], "alice") == 1
    carols = held.begin("carol")
    assert read(carols, "carol") == 1  # alice holds the most: her oldest goes
    with pytest.raises(TransactionAborted, match="given up"):
        read(alices[2], "alice")
    assert read(bobs, "bob") == 1
    assert read(alices[3], "alice") == 1
    held.close()


def test_a_client_whose_snapshots_are_all_busy_takes_none_from_a_smaller_holder(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Alice reads in two transactions (both snapshots busy) and bob holds one, idle: alice's
    third is refused, overloaded, rather than taking bob's; among equal holders the least
    recently used goes."""
    monkeypatch.setattr(transactions, "MAX_SNAPSHOTS", 3)
    db.write_one(WriteJob("busy", WritePolicy(), pa.table({"k": [1]})))
    held = transactions.Transactions(lambda: Snapshot(db), per_client=8)
    sql = "SELECT count(*) AS n FROM busy"

    def read(handle: bytes, owner: str) -> int:
        with held.query(held.get(handle, owner), sql, None) as found:
            return len(list(found.batches))

    bobs = held.begin("bob")
    assert read(bobs, "bob") == 1
    first, second, third = (held.begin("alice") for _ in range(3))
    with (
        held.query(held.get(first, "alice"), sql, None),  # reading: busy
        held.query(held.get(second, "alice"), sql, None),
    ):
        with pytest.raises(Overloaded, match="none that this client may take"):
            read(third, "alice")
        assert read(bobs, "bob") == 1
    carols = held.begin("carol")  # holds 1 with it, as bob does (and alice 2): alice's goes,
    assert read(carols, "carol") == 1  # the one she used least recently (second ended first)
    with pytest.raises(TransactionAborted, match="given up"):
        read(second, "alice")
    assert read(bobs, "bob") == 1
    dave = held.begin("dave")  # everyone holds one, as dave will: the least recently used goes
    assert read(dave, "dave") == 1
    with pytest.raises(TransactionAborted, match="given up"):
        read(first, "alice")
    assert read(bobs, "bob") == 1
    assert read(carols, "carol") == 1
    held.close()


def test_registry_bounds_expires_and_tells_expired_from_unknown() -> None:
    closed: list[str] = []
    registry = Registry[str]("thing", "thing", capacity=2, idle_seconds=60, close=closed.append)
    first = registry.add("alice", "one")
    registry.add("alice", "two")
    with pytest.raises(Overloaded):
        registry.add("alice", "three")
    assert closed == ["three"]
    assert registry.get(first, "alice") == "one"
    with pytest.raises(UnknownHandle):
        registry.get(first, "bob")
    with pytest.raises(UnknownHandle, match="unknown thing handle"):
        registry.get(b"x" * 32, "alice")
    registry.sweep(now=time.monotonic() + 61)
    assert sorted(closed) == ["one", "three", "two"]
    with pytest.raises(UnknownHandle, match="no longer open"):
        registry.get(first, "alice")


def test_registry_gives_up_an_owners_own_oldest_entry_where_it_may() -> None:
    closed: list[str] = []
    busy = {"a2"}
    registry = Registry[str](
        "thing",
        "thing",
        capacity=10,
        idle_seconds=60,
        close=closed.append,
        busy=lambda item: item in busy,
        quota=Quota(3, "things_per_client", "close one"),
        recycle=lambda item: not item.startswith("kept"),
    )
    bobs = registry.add("bob", "b1")
    kept = registry.add("alice", "kept1")
    registry.add("alice", "a2")
    third = registry.add("alice", "a3")
    registry.add("alice", "a4")  # kept1 may not be given up, a2 is busy: a3 is
    assert closed == ["a3"]
    with pytest.raises(UnknownHandle, match="no longer open"):
        registry.get(third, "alice")
    busy.clear()
    registry.get(kept, "alice")
    registry.add("alice", "a5")  # the least recently used that may go: a2
    assert closed == ["a3", "a2"]
    assert registry.owned("alice") == 3
    assert registry.get(bobs, "bob") == "b1"  # never another owner's
    registry.add("bob", "b2")
    assert registry.owned("bob") == 2


def test_registry_drops_at_most_as_many_idle_entries_as_asked() -> None:
    closed: list[str] = []
    registry = Registry[str]("thing", "thing", capacity=10, idle_seconds=60, close=closed.append)
    for name in ("one", "two", "three"):
        registry.add("alice", name)
        time.sleep(0.01)
    later = time.monotonic() + 30
    assert registry.drop_idle(5, lambda item: True, now=later, most=1) == 1
    assert closed == ["one"]  # the least recently used
    assert registry.drop_idle(5, lambda item: True, now=later) == 2
    assert sorted(closed) == ["one", "three", "two"]


def test_registry_quota_bounds_each_owner_and_never_drops_another_owners_entry() -> None:
    closed: list[str] = []
    quota = Quota(2, "things_per_client", "close one", max_bytes=100, bytes_what=" of things")
    registry = Registry[str]("thing", "thing", 3, 60, close=closed.append, quota=quota)
    bobs = registry.add("bob", "b1")
    first = registry.add("alice", "a1", size=10)
    registry.add("alice", "a2", size=10)
    with pytest.raises(
        ClientQuotaExceeded, match=r"^this client already holds 2 open things, "
    ) as refused:
        registry.add("alice", "a3")
    # Room comes when alice's entry unused the longest is dropped (60 s), not in a second.
    assert 58 <= refused.value.retry_after <= 60
    assert ClientQuotaExceeded.grpc_code == "resource_exhausted"
    assert closed == ["a3"]
    assert registry.owned("alice") == 2
    with pytest.raises(ClientQuotaExceeded, match=r"more than 100 bytes of things, as much as"):
        registry.resize(first, "alice", 91)
    assert registry.resize(first, "alice", 90) == 10  # its size until now
    registry.pop(first, "alice")
    assert registry.owned("alice") == 1
    registry.add("alice", "a4")
    with pytest.raises(Overloaded, match="too many open things on this server") as full:
        registry.add("carol", "c1")  # the table is full: refused, nobody's dropped
    assert not isinstance(full.value, ClientQuotaExceeded)
    assert registry.get(bobs, "bob") == "b1"
    registry.sweep(now=time.monotonic() + 61)
    assert len(registry) == 0
    assert registry.owned("alice") == 0
