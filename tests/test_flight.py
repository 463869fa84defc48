"""Arrow Flight against a real server: puts, reads, listings, errors, concurrency, shutdown."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import duckdb
import grpc
import httpx
import numpy as np
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from arrowport.flight.protocol import flight_pb2
from arrowport.flight.protocol import flight_sql_pb2 as sql
from arrowport.flight.sql.envelope import pack
from tests.conftest import (
    ARROW_STREAM,
    ENDLESS_QUERY,
    ONE_QUERY_TURN,
    grpc_error,
    in_flight,
    ipc_bytes,
    metric,
    mixed_batches,
    query,
    stored_rows,
)
from tests.server import ArrowportProcess
from tests.test_flight_fuzz import CMD, ipc_stream, open_put, path_descriptor, put_frames, send

FLIGHT_ARGS = ["--flight-port", "0"]


@pytest.fixture(scope="module")
def flight_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArrowportProcess]:
    with ArrowportProcess(tmp_path_factory.mktemp("flight"), args=FLIGHT_ARGS) as process:
        yield process


@pytest.fixture
def http(flight_server: ArrowportProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=flight_server.url, timeout=120) as client:
        yield client


def flight_url(server: ArrowportProcess) -> str:
    return f"grpc://127.0.0.1:{server.ready['flight_port']}"


@pytest.fixture
def fc(flight_server: ArrowportProcess) -> Iterator[flight.FlightClient]:
    client = flight.connect(flight_url(flight_server))
    yield client
    client.close()


def put(
    client: flight.FlightClient,
    descriptor: flight.FlightDescriptor,
    data: pa.Table,
    options: flight.FlightCallOptions | None = None,
    batch_rows: int | None = None,
) -> dict[str, Any]:
    """One ``do_put``; returns the server's JSON reply (sent after the commit)."""
    writer, reader = client.do_put(descriptor, data.schema, options=options)
    writer.write_table(data, max_chunksize=batch_rows)
    writer.done_writing()
    reply = reader.read()
    writer.close()
    assert reply is not None
    return json.loads(reply.to_pybytes())  # type: ignore[no-any-return]


def path(name: str) -> flight.FlightDescriptor:
    return flight.FlightDescriptor.for_path(name)


def command(**fields: Any) -> flight.FlightDescriptor:
    return flight.FlightDescriptor.for_command(json.dumps(fields).encode())


def ticket(value: str | dict[str, Any]) -> flight.Ticket:
    raw = value if isinstance(value, str) else json.dumps(value)
    return flight.Ticket(raw.encode())


def count(http: httpx.Client, table: str) -> int:
    return int(query(http, f"SELECT count(*) AS n FROM {table}").column("n")[0].as_py())


def sample(rows: int, start: int = 0) -> pa.Table:
    ids = np.arange(start, start + rows, dtype=np.int64)
    return pa.table(
        {
            "id": ids,
            "value": ids.astype(np.float64) / 2,
            "name": pa.array([f"n{i}" for i in ids]),
            "flag": pa.array(ids % 2 == 0),
            "small": pa.array((ids % 1000).astype(np.int32)),
        }
    )


# -- puts and reads ------------------------------------------------------------------------------


def test_put_by_path_replies_with_the_http_success_body(
    fc: flight.FlightClient, http: httpx.Client
) -> None:
    data = sample(1000)
    reply = put(fc, path("by_path"), data, batch_rows=300)
    assert reply["status"] == "success"
    assert reply["stream"] == "by_path"
    assert reply["table"] == "by_path"
    assert reply["rows_processed"] == 1000
    assert reply["batches"] == 4
    assert reply["message"] == "Data processed successfully"
    assert reply["table_created"] is True
    landed = query(http, "SELECT * FROM by_path ORDER BY id")
    assert landed.to_pylist() == data.to_pylist()


def test_put_by_json_command_with_target_table_and_mode(
    fc: flight.FlightClient, http: httpx.Client
) -> None:
    first = put(fc, command(stream_name="cmd_stream", target_table="cmd_table"), sample(10))
    assert (first["stream"], first["table"], first["rows_processed"]) == (
        "cmd_stream",
        "cmd_table",
        10,
    )
    again = put(fc, command(stream_name="cmd_stream", target_table="cmd_table"), sample(5, 10))
    assert again["table_created"] is False
    assert count(http, "cmd_table") == 15
    replaced = put(
        fc,
        command(stream_name="cmd_stream", target_table="cmd_table", mode="replace", chunk_size=2),
        sample(7, 100),
    )
    assert replaced["rows_processed"] == 7
    ids = query(http, "SELECT id FROM cmd_table ORDER BY id").column("id").to_pylist()
    assert ids == list(range(100, 107))


def test_do_get_streams_a_table_by_name_and_by_json_ticket(fc: flight.FlightClient) -> None:
    data = sample(300_000)
    put(fc, path("readback"), data, batch_rows=50_000)
    by_name = fc.do_get(ticket("readback")).read_all().sort_by("id")
    by_json = fc.do_get(ticket({"table": "readback"})).read_all().sort_by("id")
    assert by_name.num_rows == by_json.num_rows == 300_000
    assert by_name.equals(data.cast(by_name.schema))
    assert by_json.column("name").to_pylist()[-1] == "n299999"


def test_do_get_runs_a_read_only_query_with_params(fc: flight.FlightClient) -> None:
    put(fc, path("sqlread"), sample(100))
    result = fc.do_get(
        ticket(
            {
                "sql": "SELECT count(*) AS n, max(id) AS top FROM sqlread WHERE id < ?",
                "params": [40],
            }
        )
    ).read_all()
    assert result.to_pylist() == [{"n": 40, "top": 39}]


def test_do_get_of_an_empty_answer_streams_its_schema(fc: flight.FlightClient) -> None:
    """No rows is still an answer: the schema alone (a query, an empty table)."""
    empty = fc.do_get(ticket({"sql": "SELECT 1 AS a, 'x' AS b WHERE false"})).read_all()
    assert empty.num_rows == 0
    assert empty.schema.names == ["a", "b"]
    put(fc, command(stream_name="empty_table", mode="create"), sample(0))
    table = fc.do_get(ticket("empty_table")).read_all()
    assert table.num_rows == 0
    assert table.schema.names == sample(0).schema.names


def test_list_flights_get_flight_info_and_get_schema(fc: flight.FlightClient) -> None:
    data = sample(42)
    put(fc, path("listed"), data)
    infos = {info.descriptor.path[0].decode(): info for info in fc.list_flights()}
    assert "listed" in infos
    listed = infos["listed"]
    assert listed.total_records == 42
    assert listed.schema.names == data.schema.names
    info = fc.get_flight_info(path("listed"))
    assert info.total_records == 42
    assert info.schema.names == ["id", "value", "name", "flag", "small"]
    assert info.schema.field("small").type == pa.int32()
    # The endpoint's ticket is what do_get takes, on this same server (no locations).
    (endpoint,) = info.endpoints
    assert list(endpoint.locations) == []
    assert fc.do_get(endpoint.ticket).read_all().num_rows == 42
    schema = fc.get_schema(path("listed")).schema
    assert schema.equals(info.schema)
    # A query described by a command: its schema, and a ticket that runs it.
    sql_info = fc.get_flight_info(
        flight.FlightDescriptor.for_command(
            json.dumps({"sql": "SELECT id * 2 AS twice FROM listed WHERE id < 3"}).encode()
        )
    )
    assert sql_info.schema.names == ["twice"]
    twice = fc.do_get(sql_info.endpoints[0].ticket).read_all().column("twice").to_pylist()
    assert sorted(twice) == [0, 2, 4]


def test_flight_put_is_visible_over_http_and_http_post_over_flight(
    fc: flight.FlightClient, http: httpx.Client
) -> None:
    put(fc, path("both_ways"), sample(3))
    response = http.post(
        "/stream/both_ways",
        content=ipc_bytes(sample(2, 3)),
        headers={"Content-Type": ARROW_STREAM},
    )
    assert response.status_code == 200, response.text
    ids = fc.do_get(ticket("both_ways")).read_all().column("id").to_pylist()
    assert sorted(ids) == [0, 1, 2, 3, 4]
    assert count(http, "both_ways") == 5


def test_put_of_a_million_rows_in_many_batches_lands_every_row(
    fc: flight.FlightClient, http: httpx.Client, flight_server: ArrowportProcess
) -> None:
    data = sample(1_000_000)
    reply = put(fc, path("million"), data, batch_rows=40_000)
    assert reply["rows_processed"] == 1_000_000
    assert reply["batches"] == 25
    totals = query(http, "SELECT count(*) AS n, sum(id) AS s FROM million").to_pylist()[0]
    assert totals["n"] == 1_000_000
    assert totals["s"] == sum(range(1_000_000))


def test_many_small_batches_do_not_flood_stderr_with_alignment_warnings(
    fc: flight.FlightClient, http: httpx.Client, flight_server: ArrowportProcess
) -> None:
    # Without realignment, DuckDB's Arrow scan warns once per misaligned buffer per batch.
    reply = put(fc, path("aligned"), sample(20_000), batch_rows=37)
    assert reply["rows_processed"] == 20_000
    assert count(http, "aligned") == 20_000
    time.sleep(0.2)  # let the stderr reader catch up with anything printed during the put
    assert not [line for line in flight_server.lines if "poorly aligned" in line]


@pytest.mark.parametrize("count", [40, 3_000], ids=["group_committed", "streamed"])
def test_tiny_batches_with_changing_dictionaries_land_in_order(
    fc: flight.FlightClient, http: httpx.Client, count: int
) -> None:
    # Batches of 7 rows, each with a dictionary of its own and nested columns: joined into row
    # groups server-side, every row kept, in order, with its type.
    batches = mixed_batches(count, 7)
    table = f"tiny_flight_{count}"
    writer, reader = fc.do_put(path(table), batches[0].schema)
    for batch in batches:
        writer.write_batch(batch)
    writer.done_writing()
    reply = reader.read()
    writer.close()
    assert reply is not None
    answer = json.loads(reply.to_pybytes())
    assert (answer["rows_processed"], answer["batches"]) == (count * 7, count)
    assert stored_rows(http, table) == pa.Table.from_batches(batches).to_pylist()
    columns = http.get(f"/tables/{table}").json()["columns"]
    assert [c["type"] for c in columns] == [
        "BIGINT",
        "VARCHAR",
        "INTEGER[]",
        "STRUCT(x INTEGER, y VARCHAR)",
        "MAP(VARCHAR, BIGINT)",
    ]


# -- errors --------------------------------------------------------------------------------------


def expect_error(call: Callable[[], Any], code: str, grpc_code: str) -> str:
    """Run ``call``; it must fail with gRPC status ``grpc_code`` and a message starting with the
    error ``code``. Returns the message."""
    with pytest.raises(pa.ArrowException) as caught:
        call()
    status, message = grpc_error(caught.value)
    assert message.startswith(f"{code}: "), str(caught.value)
    assert "Traceback" not in str(caught.value)
    # gRPC status details stay empty: Go gRPC clients (ADBC) decode them as protobuf.
    assert not getattr(caught.value, "extra_info", None)
    assert status == grpc_code.upper(), str(caught.value)
    return message


def test_bad_table_name_is_an_invalid_argument(
    fc: flight.FlightClient, flight_server: ArrowportProcess
) -> None:
    message = expect_error(
        lambda: put(fc, path("no good; drop"), sample(1)),
        "invalid_name",
        "invalid_argument",
    )
    assert "no good; drop" in message
    expect_error(
        lambda: put(fc, command(stream_name="s", target_table="1bad"), sample(1)),
        "invalid_name",
        "invalid_argument",
    )
    assert flight_server.healthy()


def test_schema_conflict_names_the_columns_and_writes_nothing(
    fc: flight.FlightClient, http: httpx.Client, flight_server: ArrowportProcess
) -> None:
    put(fc, path("conflicted"), sample(5))
    message = expect_error(
        lambda: put(fc, path("conflicted"), pa.table({"id": [1], "surprise": ["x"]})),
        "schema_conflict",
        "invalid_argument",
    )
    assert "surprise" in message
    assert count(http, "conflicted") == 5
    # The server is fine and the table still takes good data.
    assert put(fc, path("conflicted"), sample(1, 5))["rows_processed"] == 1
    assert flight_server.healthy()


def test_unknown_table_in_do_get_and_get_flight_info_is_not_found(
    fc: flight.FlightClient, flight_server: ArrowportProcess
) -> None:
    expect_error(
        lambda: fc.do_get(ticket("never_written")).read_all(),
        "unknown_table",
        "not_found",
    )
    expect_error(
        lambda: fc.do_get(ticket({"table": "never_written"})).read_all(),
        "unknown_table",
        "not_found",
    )
    expect_error(
        lambda: fc.get_flight_info(path("never_written")),
        "unknown_table",
        "not_found",
    )
    assert flight_server.healthy()


def test_get_schema_of_an_unknown_table_fails_and_names_the_code(
    fc: flight.FlightClient, flight_server: ArrowportProcess
) -> None:
    expect_error(lambda: fc.get_schema(path("never_written")), "unknown_table", "not_found")
    assert flight_server.healthy()


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM readonly_target",
        "DROP TABLE readonly_target",
        "INSERT INTO readonly_target VALUES (1)",
        "SELECT 1; DROP TABLE readonly_target",
    ],
)
def test_modifying_sql_in_do_get_is_refused_as_read_only(
    fc: flight.FlightClient, http: httpx.Client, sql: str
) -> None:
    put(fc, path("readonly_target"), pa.table({"id": [1, 2]}))
    before = count(http, "readonly_target")
    expect_error(
        lambda: fc.do_get(ticket({"sql": sql})).read_all(),
        "read_only",
        "permission_denied",
    )
    assert count(http, "readonly_target") == before


@pytest.mark.parametrize(
    ("descriptor", "code"),
    [
        (flight.FlightDescriptor.for_command(b"{not json"), "invalid_json"),
        (flight.FlightDescriptor.for_command(b"[1, 2]"), "invalid_options"),
        (command(target_table="t"), "invalid_options"),
        (command(stream_name="s", unexpected=1), "invalid_options"),
        (command(stream_name="s", chunk_size="big"), "invalid_options"),
        (command(stream_name="s", chunk_size=0), "invalid_options"),
        (command(stream_name="s", mode="sideways"), "invalid_options"),
        (flight.FlightDescriptor.for_path("a", "b"), "invalid_options"),
        # A lone surrogate (JSON can escape one) cannot be stored: it was INTERNAL.
        (command(stream_name="s", idempotency_key="\ud800"), "invalid_options"),
        (command(stream_name="s", producer_id="a\udfff", sequence=0), "invalid_options"),
    ],
)
def test_bad_put_descriptors_are_invalid_arguments(
    fc: flight.FlightClient,
    flight_server: ArrowportProcess,
    descriptor: flight.FlightDescriptor,
    code: str,
) -> None:
    expect_error(lambda: put(fc, descriptor, sample(1)), code, "invalid_argument")
    assert flight_server.healthy()


def test_upsert_options_for_another_mode_are_refused_over_flight(
    fc: flight.FlightClient, http: httpx.Client
) -> None:
    put(fc, path("upsert_only_put"), sample(3))
    for options in ({"mode": "append", "key_columns": ["id"]}, {"duplicate_keys": "last_wins"}):
        descriptor = command(stream_name="upsert_only_put", **options)
        message = expect_error(
            partial(put, fc, descriptor, sample(2, 10)),
            "invalid_options",
            "invalid_argument",
        )
        assert "mode upsert only" in message
    assert count(http, "upsert_only_put") == 3


def test_a_put_that_ends_before_any_frame_is_told_it_carried_nothing(
    flight_server: ArrowportProcess,
) -> None:
    """A put whose stream ends without a single frame (what the ADBC driver sends for an ingest
    of zero record batches) is refused as carrying nothing, not as a first frame without its
    descriptor; a first frame that lacks the descriptor is still refused as such."""
    channel = grpc.insecure_channel(f"127.0.0.1:{flight_server.flight_port}")
    try:
        do_put = open_put(channel)
        nothing = send(do_put, [])
        frames = put_frames(ipc_bytes(sample(2)), b"never_named")
        frames[0] = dataclasses.replace(frames[0], descriptor=None)
        unnamed = send(do_put, [frame.encode() for frame in frames])
    finally:
        channel.close()
    assert nothing.code == grpc.StatusCode.INVALID_ARGUMENT, nothing.describe()
    assert nothing.details.startswith(
        "invalid_options: the put carried no data and no descriptor"
    ), nothing.details
    assert "adbc_ingest of zero rows" in nothing.details
    assert unnamed.code == grpc.StatusCode.INVALID_ARGUMENT, unnamed.describe()
    assert unnamed.details == (
        "invalid_options: a put's first frame must carry its flight descriptor"
    ), unnamed.details
    assert flight_server.healthy()


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"{garbage", "invalid_json"),
        (b'{"table": "a", "sql": "SELECT 1"}', "invalid_options"),
        (b'{"sql": "SELECT 1", "params": "x"}', "invalid_options"),
        (b'{"sql": "SELEKT nonsense"}', "query_error"),
        (b"bad name!", "invalid_name"),
    ],
)
def test_bad_tickets_are_invalid_arguments(
    fc: flight.FlightClient, flight_server: ArrowportProcess, raw: bytes, code: str
) -> None:
    expect_error(
        lambda: fc.do_get(flight.Ticket(raw)).read_all(),
        code,
        "invalid_argument",
    )
    assert flight_server.healthy()


# Requests whose error message would echo far more than a gRPC status can carry: a C++ client
# (pyarrow's) refuses trailers over 16 KiB, and then sees RESOURCE_EXHAUSTED "received metadata
# size exceeds hard limit" instead of the status.
LONG_ECHOES: list[tuple[str, Callable[[flight.FlightClient], object], str]] = [
    ("put_path", lambda fc: put(fc, path("a" * 100_000), sample(1)), "invalid_name"),
    (
        "put_command_key",
        lambda fc: put(fc, command(stream_name="s", **{"k" * 20_000: 1}), sample(1)),
        "invalid_options",
    ),
    ("ticket", lambda fc: fc.do_get(flight.Ticket(b"a" * 20_000)).read_all(), "invalid_name"),
    (
        "multibyte_ticket",
        lambda fc: fc.do_get(ticket("\u20ac" * 20_000)).read_all(),
        "invalid_name",
    ),
    ("info_path", lambda fc: fc.get_flight_info(path("b" * 20_000)), "invalid_name"),
    ("schema_path", lambda fc: fc.get_schema(path("b" * 20_000)), "invalid_name"),
    ("action", lambda fc: list(fc.do_action(flight.Action("n" * 20_000, b""))), "invalid_options"),
    ("ticket_key", lambda fc: fc.do_get(ticket({"k" * 20_000: 1})).read_all(), "invalid_options"),
    (
        "query_echoed_by_duckdb",
        lambda fc: fc.do_get(ticket({"sql": "select " + "x" * 30_000})).read_all(),
        "query_error",
    ),
]


@pytest.mark.parametrize(
    ("call", "code"), [pytest.param(call, code, id=name) for name, call, code in LONG_ECHOES]
)
def test_a_long_error_message_is_cut_and_keeps_its_status_and_code(
    fc: flight.FlightClient,
    flight_server: ArrowportProcess,
    call: Callable[[flight.FlightClient], object],
    code: str,
) -> None:
    message = expect_error(lambda: call(fc), code, "invalid_argument")
    assert len(message.encode()) <= 4096, len(message.encode())  # MAX_STATUS_BYTES
    assert flight_server.healthy()


def test_json_that_starts_with_a_newline_is_json_not_flight_sql(
    fc: flight.FlightClient, http: httpx.Client
) -> None:
    """Arrowport's own JSON requests may start with any white space, a newline (0x0a, the first
    byte of a Flight SQL ``Any``) included."""
    reply = put(fc, flight.FlightDescriptor.for_command(b'\n{"stream_name": "nl_put"}'), sample(3))
    assert reply["table"] == "nl_put"
    assert count(http, "nl_put") == 3
    read = fc.do_get(flight.Ticket(b'\n\r\n {"table": "nl_put"}')).read_all()
    assert read.num_rows == 3
    descriptor = flight.FlightDescriptor.for_command(b'\n{"sql": "SELECT 7 AS n"}')
    info = fc.get_flight_info(descriptor)
    assert fc.do_get(info.endpoints[0].ticket).read_all().to_pylist() == [{"n": 7}]
    assert fc.get_schema(descriptor).schema.names == ["n"]
    # A Flight SQL command that is no valid Any is still refused as such.
    message = expect_error(
        lambda: fc.do_get(flight.Ticket(b"\n\xff")).read_all(),
        "invalid_options",
        "invalid_argument",
    )
    assert "google.protobuf.Any" in message


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        (b'{"table": "dup_read", "table": "nosuch"}', "table"),
        (b'{"sql": "SELECT 1 AS n", "sql": "SELECT 2 AS n"}', "sql"),
        (b'{"sql": "SELECT ?::JSON AS j", "params": [{"a": 1, "a": 2}]}', "a"),
    ],
)
def test_a_ticket_or_descriptor_that_repeats_a_json_key_is_refused(
    fc: flight.FlightClient, flight_server: ArrowportProcess, raw: bytes, key: str
) -> None:
    put(fc, path("dup_read"), sample(1))
    calls = [
        lambda: fc.do_get(flight.Ticket(raw)).read_all(),
        lambda: fc.get_flight_info(flight.FlightDescriptor.for_command(raw)),
        lambda: fc.get_schema(flight.FlightDescriptor.for_command(raw)),
    ]
    for call in calls:
        message = expect_error(call, "invalid_options", "invalid_argument")
        assert f"repeats the key {key!r}" in message, message
    assert flight_server.healthy()


def test_a_put_command_that_repeats_a_json_key_writes_nothing(
    fc: flight.FlightClient, http: httpx.Client, flight_server: ArrowportProcess
) -> None:
    commands = [
        b'{"stream_name": "dup_put_a", "stream_name": "dup_put_b"}',
        b'{"stream_name": "dup_put_a", "mode": "append", "mode": "replace"}',
        b'{"stream_name": "dup_put_a", "key_columns": ["id"], "x": {"y": 1, "y": 2}}',
    ]
    for raw in commands:
        descriptor = flight.FlightDescriptor.for_command(raw)
        message = expect_error(
            lambda d=descriptor: put(fc, d, sample(2)),  # type: ignore[misc]
            "invalid_options",
            "invalid_argument",
        )
        assert "the put command repeats the key" in message, message
    names = {table["name"] for table in http.get("/tables").json()}
    assert not {"dup_put_a", "dup_put_b"} & names
    assert flight_server.healthy()


def test_a_ticket_or_descriptor_over_the_query_limit_is_refused(
    fc: flight.FlightClient, flight_server: ArrowportProcess
) -> None:
    """Held to ``limits.max_query_body_bytes`` (1 MiB), as a ``POST /query`` body is."""
    raw = json.dumps({"sql": "SELECT 1 AS n --" + "x" * 2_000_000}).encode()
    descriptor = flight.FlightDescriptor.for_command(raw)
    calls = [
        lambda: fc.do_get(flight.Ticket(raw)).read_all(),
        lambda: fc.get_flight_info(descriptor),
        lambda: fc.get_schema(descriptor),
        lambda: fc.do_get(flight.Ticket(b"t" * 1_100_000)).read_all(),
    ]
    for call in calls:
        message = expect_error(call, "payload_too_large", "resource_exhausted")
        assert "than 1048576 bytes (limits.max_query_body_bytes)" in message, message
    # Just under the limit it runs, and so does the ticket its GetFlightInfo answers with,
    # though JSON written again with ASCII escapes would take six bytes for each character.
    sql_text = "SELECT 500000 AS n -- " + "\u00e9" * 500_000  # (no literal that long)
    raw = json.dumps({"sql": sql_text}, ensure_ascii=False).encode()
    assert 1_000_000 < len(raw) <= 1_048_576
    assert fc.do_get(flight.Ticket(raw)).read_all().to_pylist() == [{"n": 500_000}]
    info = fc.get_flight_info(flight.FlightDescriptor.for_command(raw))
    assert fc.do_get(info.endpoints[0].ticket).read_all().to_pylist() == [{"n": 500_000}]
    assert flight_server.healthy()


def test_flight_errors_are_counted_in_metrics(fc: flight.FlightClient, http: httpx.Client) -> None:
    before = errors_counted(http, "unknown_table")
    with pytest.raises(KeyError):  # NOT_FOUND
        fc.do_get(ticket("not_there_either")).read_all()
    assert errors_counted(http, "unknown_table") == before + 1


def test_an_abandoned_upload_writes_nothing(
    flight_server: ArrowportProcess, http: httpx.Client
) -> None:
    # A client process that dies mid-upload: the call ends without the end of the stream.
    script = (
        "import os, sys, time, pyarrow as pa, pyarrow.flight as fl\n"
        "c = fl.connect(sys.argv[1])\n"
        "t = pa.table({'id': list(range(1000))})\n"
        "w, r = c.do_put(fl.FlightDescriptor.for_path('abandoned'), t.schema)\n"
        "w.write_table(t, max_chunksize=100)\n"
        "time.sleep(0.5)\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", script, flight_url(flight_server)], check=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if any("flight call cancelled" in line for line in flight_server.lines):
            break
        time.sleep(0.1)
    tables = http.get("/tables").json()
    assert "abandoned" not in [t["name"] for t in tables]
    assert flight_server.healthy()


def test_reads_stopped_early_give_their_threads_back(tmp_path: Path) -> None:
    # Four calls at once; six reads each stopped after their first batch. Were a stopped read
    # to keep its call (and thread), the server would stop answering after four.
    config = {"flight": {"max_concurrent_calls": 4}}
    with ArrowportProcess(tmp_path, args=FLIGHT_ARGS, config=config) as server:
        client = flight.connect(flight_url(server))
        sql = "SELECT range AS x, range::VARCHAR AS s FROM range(20000000)"
        for _ in range(6):
            reader = client.do_get(flight.Ticket(json.dumps({"sql": sql}).encode()))
            reader.read_chunk()
            reader.cancel()
        answered = list(client.list_actions(options=flight.FlightCallOptions(timeout=10)))
        assert "producer_offset" in [action.type for action in answered]
        with httpx.Client(base_url=server.url, timeout=30) as http:
            deadline = time.monotonic() + 30
            while in_flight(http) > 1 and time.monotonic() < deadline:  # 1: this scrape
                time.sleep(0.1)
            assert in_flight(http) == 1
        assert server.healthy()


def test_reads_given_up_while_queued_leave_the_running_read_its_threads(tmp_path: Path) -> None:
    # One query turn, two call threads. Two reads give up while queued for the turn, and their
    # queries still wait for it on threads of the server's: the read holding the turn must still
    # get a thread for each of its next batches, and the server must still stop on SIGTERM.
    config = {
        "flight": {"max_concurrent_calls": 2},
        "limits": {"max_concurrent_queries": 1, "shutdown_timeout_seconds": 2},
    }
    server = ArrowportProcess(tmp_path, args=FLIGHT_ARGS, config=config).start()
    try:
        sql = "SELECT range AS x, range::VARCHAR AS s FROM range(3000000)"
        ticket = flight.Ticket(json.dumps({"sql": sql}).encode())
        holder = flight.connect(flight_url(server)).do_get(
            ticket, options=flight.FlightCallOptions(timeout=60)
        )
        first = holder.read_chunk().data
        for _ in range(2):
            with pytest.raises(flight.FlightTimedOutError):
                flight.connect(flight_url(server)).do_get(
                    ticket, options=flight.FlightCallOptions(timeout=1)
                ).read_all()
        rest = holder.read_all()
        assert first.num_rows + rest.num_rows == 3_000_000
        answered = flight.connect(flight_url(server)).list_actions(
            options=flight.FlightCallOptions(timeout=10)
        )
        assert "producer_offset" in [action.type for action in answered]
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(30) == 0
    finally:
        server.kill()


@pytest.mark.parametrize("sent_rows", [0, 300_000], ids=["schema_only", "past_small_body"])
def test_a_put_that_stops_sending_times_out_and_writes_nothing(
    tmp_path: Path, sent_rows: int
) -> None:
    """A put whose client stops sending (after its schema, or partway through a large upload
    already being written) ends DEADLINE_EXCEEDED once ``limits.body_timeout_seconds`` pass
    without data, rather than holding its call for good."""
    config = {"limits": {"body_timeout_seconds": 1}}
    with ArrowportProcess(tmp_path, args=FLIGHT_ARGS, config=config) as server:
        client = flight.connect(flight_url(server))
        data = sample(sent_rows)
        # The client's own deadline only stops the test hanging if the server never answers.
        options = flight.FlightCallOptions(timeout=20)
        writer, reader = client.do_put(path("stalled"), data.schema, options=options)
        if sent_rows:
            writer.write_table(data)
        started = time.monotonic()

        def wait_for_answer() -> None:
            reader.read()
            writer.close()

        message = expect_error(wait_for_answer, "request_timeout", "deadline_exceeded")
        assert "1 seconds" in message
        assert time.monotonic() - started < 15
        with httpx.Client(base_url=server.url, timeout=30) as http:
            assert http.get("/tables/stalled").status_code == 404
        put(client, path("stalled"), sample(10))
        with httpx.Client(base_url=server.url, timeout=30) as http:
            assert count(http, "stalled") == 10
        client.close()
        assert server.healthy()


def test_a_put_that_sends_slowly_but_steadily_is_not_timed_out(tmp_path: Path) -> None:
    """``limits.body_timeout_seconds`` bounds each wait for the next frame, not the put: one
    whose batches keep coming, each within the timeout (and at the minimum rate,
    ``limits.min_body_bytes_per_second``), lands whole however long it takes."""
    config = {"limits": {"body_timeout_seconds": 1}}
    with ArrowportProcess(tmp_path, args=FLIGHT_ARGS, config=config) as server:
        client = flight.connect(flight_url(server))
        data = sample(80)
        writer, reader = client.do_put(path("steady"), data.schema)
        started = time.monotonic()
        for batch in data.to_batches(max_chunksize=10):
            time.sleep(0.4)
            writer.write_batch(batch)
        writer.done_writing()
        reader.read()
        writer.close()
        assert time.monotonic() - started > 3  # the put outlasted the timeout threefold
        with httpx.Client(base_url=server.url, timeout=30) as http:
            assert count(http, "steady") == 80
        client.close()


def test_a_put_or_handshake_that_trickles_is_timed_out(tmp_path: Path) -> None:
    """A put whose frames keep coming, each within ``limits.body_timeout_seconds``, but slower
    than ``limits.min_body_bytes_per_second`` over such a period, ends DEADLINE_EXCEEDED
    ``request_timeout`` with nothing written, as an HTTP body does (a frame every minute held
    a put, and one of the server's calls, for ever); so does a Handshake that trickles."""
    config = {"limits": {"body_timeout_seconds": 1, "min_body_bytes_per_second": 100_000}}
    with ArrowportProcess(tmp_path, args=FLIGHT_ARGS, config=config) as server:
        client = flight.connect(flight_url(server))
        data = sample(200)
        writer, reader = client.do_put(
            path("trickled"), data.schema, options=flight.FlightCallOptions(timeout=20)
        )
        started = time.monotonic()

        def trickle() -> None:
            for batch in data.to_batches(max_chunksize=10):
                writer.write_batch(batch)
                time.sleep(0.3)
            writer.done_writing()
            reader.read()

        message = expect_error(trickle, "request_timeout", "deadline_exceeded")
        assert message.startswith(
            "request_timeout: the upload arrives slower than 100000 bytes a second "
            "(limits.min_body_bytes_per_second)"
        ), message
        assert time.monotonic() - started < 15
        with contextlib.suppress(pa.ArrowException):
            writer.close()

        channel = grpc.insecure_channel(f"127.0.0.1:{server.flight_port}")

        def dribble() -> Iterator[bytes]:
            for _ in range(30):
                yield b"x"
                time.sleep(0.3)

        with pytest.raises(grpc.RpcError) as refused:
            tuple(raw_handshake(channel)(dribble(), timeout=20))
        channel.close()
        assert refused.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert (refused.value.details() or "").startswith(
            "request_timeout: the handshake arrives slower than 100000 bytes a second"
        )
        with httpx.Client(base_url=server.url, timeout=30) as http:
            assert http.get("/tables/trickled").status_code == 404
        put(client, path("trickled"), sample(10))

        # The first period starts with the first frame: a client may open its put, then
        # take its time to produce a first batch, then send fast enough.
        paused = sample(14_000)
        writer, reader = client.do_put(path("paused"), paused.schema)
        time.sleep(0.8)
        for batch in paused.to_batches(max_chunksize=700):  # ~20 KB each, 10 a second
            writer.write_batch(batch)
            time.sleep(0.1)
        writer.done_writing()
        reader.read()
        writer.close()
        client.close()
        with httpx.Client(base_url=server.url, timeout=30) as http:
            assert count(http, "trickled") == 10
            assert count(http, "paused") == 14_000


# How a put reaches its commit: group-committed on the event loop; in a transaction of its own
# (not an append) or streamed (past ``limits.small_body_bytes``), written from a thread that reads
# its frames from the loop; or as Flight SQL's bulk ingestion, answered on a thread.
CANCELLED_PUT_PATHS = {
    "grouped": (path_descriptor(b"cut"), None),
    "own-transaction": (
        flight_pb2.FlightDescriptor(type=CMD, cmd=b'{"stream_name": "cut", "mode": "replace"}'),
        None,
    ),
    "streamed": (path_descriptor(b"cut"), {"limits": {"small_body_bytes": 0}}),
    "flight-sql": (
        flight_pb2.FlightDescriptor(
            type=CMD,
            cmd=pack(
                sql.CommandStatementIngest(
                    table=b"cut",
                    table_definition_options=sql.CommandStatementIngest.TableDefinitionOptions(
                        if_not_exist=sql.CommandStatementIngest.TableDefinitionOptions.TABLE_NOT_EXIST_OPTION_CREATE,
                        if_exists=sql.CommandStatementIngest.TableDefinitionOptions.TABLE_EXISTS_OPTION_APPEND,
                    ),
                )
            ),
        ),
        None,
    ),
}


@pytest.mark.parametrize("path", list(CANCELLED_PUT_PATHS))
def test_a_put_cancelled_mid_stream_writes_nothing(tmp_path: Path, path: str) -> None:
    """gRPC ends a cancelled call's request stream as if it had finished, and reports the
    cancellation a moment later: a put whose client cancels it after the first of its two
    batches, never ending the stream, writes nothing, not that first batch, whichever way it
    would have been written. (With the grace waited on the writer's thread, 1-10 % of such
    puts landed on an idle machine.)"""
    descriptor, config = CANCELLED_PUT_PATHS[path]
    table = pa.table({"id": pa.array(range(40), pa.int64())})
    batches = table.to_batches(max_chunksize=20)
    frames = put_frames(ipc_stream(batches, table.schema), b"cut")
    frames[0] = dataclasses.replace(frames[0], descriptor=descriptor)
    encoded = [frame.encode() for frame in frames]
    with ArrowportProcess(tmp_path, args=FLIGHT_ARGS, config=config) as server:
        channel = grpc.insecure_channel(f"127.0.0.1:{server.flight_port}")
        do_put = open_put(channel)
        whole = send(do_put, encoded)  # the whole put: 40 rows
        assert whole.code is None, whole.describe()
        outcomes = [send(do_put, encoded[:2], cancel_after=0.02) for _ in range(100)]
        channel.close()
        assert all(outcome.cancelled for outcome in outcomes)
        with httpx.Client(base_url=server.url, timeout=30) as http:
            assert count(http, "cut") == 40


def raw_handshake(channel: grpc.Channel) -> grpc.StreamStreamMultiCallable:
    """Flight's Handshake as plain gRPC: a client stream of bytes that may stay open."""
    return channel.stream_stream(
        "/arrow.flight.protocol.FlightService/Handshake",
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )


def test_a_handshake_that_never_ends_its_stream_times_out(tmp_path: Path) -> None:
    """A Handshake whose client sends nothing and keeps its stream open ends DEADLINE_EXCEEDED
    once ``limits.body_timeout_seconds`` pass, rather than holding one of the server's calls
    for good: with room for two calls, two such Handshakes do not lock every client out."""
    config = {"limits": {"body_timeout_seconds": 1}, "flight": {"max_concurrent_calls": 2}}
    with ArrowportProcess(tmp_path, args=FLIGHT_ARGS, config=config) as server:
        channel = grpc.insecure_channel(f"127.0.0.1:{server.flight_port}")
        handshake = raw_handshake(channel)
        release = threading.Event()

        def silent() -> Iterator[bytes]:  # a client stream that stays open, empty
            release.wait(30)
            yield from ()

        def stalled_handshake() -> tuple[grpc.StatusCode, str]:
            try:
                tuple(handshake(silent(), timeout=20))
            except grpc.RpcError as exc:
                return exc.code(), exc.details() or ""
            raise AssertionError("the stalled handshake was answered")

        started = time.monotonic()
        try:
            with ThreadPoolExecutor(2) as pool:
                outcomes = list(pool.map(lambda _: stalled_handshake(), range(2)))
        finally:
            release.set()
            channel.close()
        assert time.monotonic() - started < 15
        for status, details in outcomes:
            assert status == grpc.StatusCode.DEADLINE_EXCEEDED
            assert details.startswith("request_timeout: no data of the handshake arrived for 1 ")
        client = flight.connect(flight_url(server))
        put(client, path("after_stalled_handshakes"), sample(3))
        client.close()
        with httpx.Client(base_url=server.url, timeout=30) as http:
            assert count(http, "after_stalled_handshakes") == 3


def test_grpc_message_compression_is_refused(flight_server: ArrowportProcess) -> None:
    """gRPC's own message compression is not taken (UNIMPLEMENTED): a few hundred KB of gzip
    made the server inflate and parse up to its receive limit, and counted toward a put's
    minimum rate as if sent. Uncompressed calls on the same server are served."""
    address = f"127.0.0.1:{flight_server.flight_port}"
    with grpc.insecure_channel(address, compression=grpc.Compression.Gzip) as channel:
        list_actions = channel.unary_stream("/arrow.flight.protocol.FlightService/ListActions")
        with pytest.raises(grpc.RpcError) as refused:
            tuple(list_actions(b"", timeout=10))
        assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
    with grpc.insecure_channel(address) as channel:
        list_actions = channel.unary_stream("/arrow.flight.protocol.FlightService/ListActions")
        assert tuple(list_actions(b"", timeout=10))


def test_calls_the_server_does_not_serve_are_refused_with_a_code(
    fc: flight.FlightClient, flight_server: ArrowportProcess, http: httpx.Client
) -> None:
    """DoExchange and PollFlightInfo are answered UNIMPLEMENTED ``not_implemented`` saying what
    to use instead, counted as any refusal: not gRPC's bare "Method not found!"."""
    before = errors_counted(http, "not_implemented")

    def exchange() -> None:
        writer, reader = fc.do_exchange(path("exchanged"))
        with writer:
            reader.read_all()

    message = expect_error(exchange, "not_implemented", "UNIMPLEMENTED")
    assert "DoExchange is not served by this server: send data with DoPut" in message
    descriptor = flight_pb2.FlightDescriptor(type=flight_pb2.FlightDescriptor.PATH, path=[b"t"])
    with grpc.insecure_channel(f"127.0.0.1:{flight_server.flight_port}") as channel:
        poll = channel.unary_unary("/arrow.flight.protocol.FlightService/PollFlightInfo")
        with pytest.raises(grpc.RpcError) as refused:
            poll(descriptor.SerializeToString(), timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert refused.value.details().startswith(
        "not_implemented: PollFlightInfo is not served by this server: use GetFlightInfo"
    ), refused.value.details()
    assert errors_counted(http, "not_implemented") == before + 2


def raw_request_stream(channel: grpc.Channel, method: str) -> grpc.StreamStreamMultiCallable:
    """A Flight call of one request (DoGet, GetFlightInfo, …) as plain gRPC with a client
    stream: the same bytes on the wire, but the client decides when (and whether) the request
    message is sent."""
    return channel.stream_stream(
        f"/arrow.flight.protocol.FlightService/{method}",
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )


def test_a_call_whose_request_never_arrives_times_out(tmp_path: Path) -> None:
    """A single-message call whose client never sends its request ends DEADLINE_EXCEEDED once
    ``limits.body_timeout_seconds`` pass (the call limit admits it before its request is read,
    and the metrics count it in flight and time it from its start), and one that ends its
    stream without a request is INVALID_ARGUMENT; one its client cancels before sending its
    request is a cancellation, not the client's error. The server serves on."""
    config = {"limits": {"body_timeout_seconds": 1}, "flight": {"max_concurrent_calls": 2}}
    with (
        ArrowportProcess(tmp_path, args=FLIGHT_ARGS, config=config) as server,
        httpx.Client(base_url=server.url, timeout=30) as http,
    ):
        channel = grpc.insecure_channel(f"127.0.0.1:{server.flight_port}")
        release = threading.Event()

        def silent() -> Iterator[bytes]:
            release.wait(30)
            yield from ()

        def outcome(method: str, requests: Iterator[bytes]) -> tuple[grpc.StatusCode, str]:
            try:
                tuple(raw_request_stream(channel, method)(requests, timeout=20))
            except grpc.RpcError as exc:
                return exc.code(), exc.details() or ""
            raise AssertionError(f"{method} was answered")

        started = time.monotonic()
        try:
            with ThreadPoolExecutor(2) as pool:
                waiting = [pool.submit(outcome, m, silent()) for m in ["DoGet", "GetSchema"]]
                deadline = time.monotonic() + 0.8
                while in_flight(http) < 3 and time.monotonic() < deadline:
                    time.sleep(0.02)
                assert in_flight(http) == 3  # the two calls waiting, and this scrape
                stalled = [future.result() for future in waiting]
        finally:
            release.set()
        assert time.monotonic() - started < 15
        for status, details in stalled:
            assert status == grpc.StatusCode.DEADLINE_EXCEEDED, details
            assert details.startswith("request_timeout: no data of the request arrived for 1 ")
        timed = metric(
            http,
            'arrowport_request_duration_seconds_sum{method="GRPC",route="flight/do_get",'
            'status="DEADLINE_EXCEEDED"}',
        )
        assert timed >= 0.9  # from the call's start, not from its refusal

        def late() -> Iterator[bytes]:
            time.sleep(0.5)
            yield b""  # ListFlights' Criteria: all

        assert tuple(raw_request_stream(channel, "ListFlights")(late(), timeout=20)) == ()
        served = metric(
            http,
            'arrowport_request_duration_seconds_sum{method="GRPC",route="flight/list_flights",'
            'status="OK"}',
        )
        assert served >= 0.45  # a served call too: its request's reading counts

        refused_before = errors_counted(http, "invalid_options")
        for method in ("DoGet", "GetFlightInfo", "DoAction", "ListFlights"):
            status, details = outcome(method, iter(()))
            assert status == grpc.StatusCode.INVALID_ARGUMENT, (method, details)
            assert details == "invalid_options: the call ended without its request message"
        assert errors_counted(http, "invalid_options") == refused_before + 4
        held = threading.Event()

        def unsent() -> Iterator[bytes]:
            held.wait(30)
            yield from ()

        for _ in range(5):
            call = raw_request_stream(channel, "GetFlightInfo")(unsent(), timeout=20)
            time.sleep(0.2)
            call.cancel()
        time.sleep(0.5)
        held.set()
        assert errors_counted(http, "invalid_options") == refused_before + 4
        channel.close()
        client = flight.connect(flight_url(server))
        put(client, path("after_silent_requests"), sample(3))
        assert client.do_get(ticket("after_silent_requests")).read_all().num_rows == 3
        client.close()


def test_a_request_message_longer_than_any_call_takes_is_refused(
    fc: flight.FlightClient, flight_server: ArrowportProcess
) -> None:
    """A request of a single-message call is at most ``limits.max_query_body_bytes`` and 16 MiB
    for a schema: one longer is RESOURCE_EXHAUSTED ``payload_too_large`` before anything
    parses it (each parse copied it again: eight 200 MB tickets took 5.6 GB)."""
    longest = 1024**2 + 16 * 1024**2
    huge = b"x" * (longest + 1)
    calls = [
        lambda: fc.do_get(flight.Ticket(huge)).read_all(),
        lambda: fc.get_flight_info(flight.FlightDescriptor.for_command(huge)),
        lambda: list(fc.do_action(flight.Action("producer_offset", huge))),
        lambda: list(fc.list_flights(huge)),
    ]
    for call in calls:
        message = expect_error(call, "payload_too_large", "resource_exhausted")
        assert message.startswith("payload_too_large: the request message is "), message
        assert f"({longest}: limits.max_query_body_bytes and 16 MiB for a schema)" in message
    assert flight_server.healthy()


def test_a_call_past_the_call_limit_is_refused_overloaded(tmp_path: Path) -> None:
    """With ``flight.max_concurrent_calls`` calls running, one more of any kind is refused
    UNAVAILABLE ``overloaded`` (the code every overload has, with when to retry), counted in the
    metrics; once one of them ends, calls are served again."""
    config = {"flight": {"max_concurrent_calls": 2}}
    with ArrowportProcess(tmp_path, args=FLIGHT_ARGS, config=config) as server:
        channel = grpc.insecure_channel(f"127.0.0.1:{server.flight_port}")
        handshake = raw_handshake(channel)
        releases = [threading.Event(), threading.Event()]

        def held(release: threading.Event) -> Iterator[bytes]:  # open until released
            release.wait(30)
            yield from ()

        pool = ThreadPoolExecutor(2)
        holders = [
            pool.submit(lambda r: tuple(handshake(held(r), timeout=60)), release)
            for release in releases
        ]
        try:
            with httpx.Client(base_url=server.url, timeout=30) as http:
                deadline = time.monotonic() + 30
                while in_flight(http) < 3 and time.monotonic() < deadline:  # 3: and this scrape
                    time.sleep(0.05)
                assert in_flight(http) == 3
                refused_before = errors_counted(http, "overloaded")

                def unary_stream(method: str, request: bytes) -> object:
                    answered = channel.unary_stream(
                        f"/arrow.flight.protocol.FlightService/{method}"
                    )
                    return list(answered(request, timeout=10))

                def unary(method: str, request: bytes) -> object:
                    answered = channel.unary_unary(f"/arrow.flight.protocol.FlightService/{method}")
                    return answered(request, timeout=10)

                raw = [
                    (unary_stream, "ListActions", b""),
                    (unary, "GetSchema", path_descriptor(b"t").SerializeToString()),
                    (unary_stream, "DoGet", b"t"),
                ]
                for call, method, request in raw:
                    with pytest.raises(grpc.RpcError) as refused:
                        call(method, request)
                    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, method
                    details = refused.value.details() or ""
                    assert details.startswith("overloaded: "), details
                    assert "flight.max_concurrent_calls" in details
                    assert details.endswith("(retry after 1 s)")

                client = flight.connect(flight_url(server))
                with pytest.raises(flight.FlightUnavailableError, match="overloaded: "):
                    put(client, path("refused"), sample(3))
                assert errors_counted(http, "overloaded") == refused_before + 4

                releases[0].set()
                holders[0].result(30)
                put(client, path("served"), sample(3))
                assert count(http, "served") == 3
                assert "refused" not in [t["name"] for t in http.get("/tables").json()]
                client.close()
        finally:
            for release in releases:
                release.set()
            for holder in holders:
                with contextlib.suppress(grpc.RpcError):
                    holder.result(30)
            pool.shutdown()
            channel.close()
        assert server.healthy()


def errors_counted(http: httpx.Client, code: str, protocol: str = "flight") -> float:
    """``arrowport_errors_total`` of Flight calls (or ``protocol``'s) refused with ``code``."""
    for line in http.get("/metrics").text.splitlines():
        labels = f'code="{code}"' in line and f'protocol="{protocol}"' in line
        if line.startswith("arrowport_errors_total{") and labels:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_put_holds_its_bytes_against_the_in_flight_budget(tmp_path: Path) -> None:
    """A large put being written as it arrives holds its buffer of
    ``limits.max_inflight_bytes``, as a streamed HTTP body holds its pipe: while it runs, bodies that would pass the budget are
    refused (HTTP 503, Flight UNAVAILABLE, both ``overloaded``); once it commits they land."""
    config = {
        "limits": {"max_inflight_bytes": 4 * 1024**2, "body_timeout_seconds": 60},
        "flight": {"upload_buffer_bytes": 8 * 1024**2},
    }
    with (
        ArrowportProcess(tmp_path, args=FLIGHT_ARGS, config=config) as server,
        httpx.Client(base_url=server.url, timeout=30) as http,
    ):
        client = flight.connect(flight_url(server))
        large = sample(300_000)
        writer, reader = client.do_put(path("held_large"), large.schema)
        writer.write_table(large)  # past limits.small_body_bytes: buffered, the stream kept open
        deadline = time.monotonic() + 30
        while held_bytes(http) < 8 * 1024**2:  # the put has reached its buffer
            assert time.monotonic() < deadline, "the large put never held its buffer"
            time.sleep(0.05)
        refused = http.post(
            "/stream/held_small",
            content=ipc_bytes(sample(1_000)),
            headers={"Content-Type": ARROW_STREAM},
        )
        assert refused.status_code == 503, refused.text
        assert refused.json()["code"] == "overloaded"
        expect_error(
            lambda: put(client, path("held_small"), sample(1_000)), "overloaded", "unavailable"
        )
        writer.done_writing()
        assert json.loads(reader.read().to_pybytes())["rows_processed"] == 300_000
        writer.close()
        put(client, path("held_small"), sample(1_000))
        assert count(http, "held_large") == 300_000
        assert count(http, "held_small") == 1_000
        assert held_bytes(http) == 0
        client.close()


def held_bytes(http: httpx.Client) -> float:
    """The server's ``arrowport_inflight_bytes`` gauge."""
    return metric(http, "arrowport_inflight_bytes")


@contextlib.contextmanager
def holding_the_streaming_writer(server: ArrowportProcess, body: bytes) -> Iterator[None]:
    """A large HTTP upload that stalls, holding a streaming writer while the block runs."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as upload:
        upload.sendall(
            b"POST /stream/held HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/vnd.apache.arrow.stream\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body[:100_000]
        )
        with httpx.Client(base_url=server.url, timeout=30) as http:
            deadline = time.monotonic() + 30
            while in_flight(http) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
        yield


def test_a_small_put_in_a_transaction_of_its_own_takes_a_streaming_writer(
    tmp_path: Path,
) -> None:
    """A small put that is not group-committed (here: mode replace) writes in a transaction of
    its own, as the same HTTP request would: it needs one of limits.max_streaming_writes, and
    is refused UNAVAILABLE while they are all busy; a small append is group-committed."""
    config = {"limits": {"max_streaming_writes": 1, "body_timeout_seconds": 60}}
    with ArrowportProcess(tmp_path, args=FLIGHT_ARGS, config=config) as server:
        client = flight.connect(flight_url(server))
        with (
            holding_the_streaming_writer(server, ipc_bytes(sample(300_000))),
            httpx.Client(base_url=server.url, timeout=30) as http,
        ):
            expect_error(
                lambda: put(client, command(stream_name="r", mode="replace"), sample(10)),
                "overloaded",
                "unavailable",
            )
            put(client, path("appended"), sample(10))
            assert count(http, "appended") == 10
        # Once the stalled upload has gone (its writer gives the slot back), the put lands.
        deadline = time.monotonic() + 30
        while True:
            try:
                reply = put(client, command(stream_name="r", mode="replace"), sample(10))
                break
            except pa.ArrowException as exc:
                if "overloaded" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert reply["rows_processed"] == 10
        client.close()


def test_a_put_too_large_is_refused_as_such_while_the_writers_are_busy(tmp_path: Path) -> None:
    """A put whose first large message breaks ``limits.max_message_bytes`` is refused
    RESOURCE_EXHAUSTED ``payload_too_large`` even while every streaming writer is busy: the
    message is checked before the put waits for a writer, so the client is not told to retry
    (UNAVAILABLE ``overloaded``) what can never land."""
    config = {
        "limits": {
            "max_streaming_writes": 1,
            "max_message_bytes": 2 * 1024**2,
            "body_timeout_seconds": 60,
        }
    }
    with ArrowportProcess(tmp_path, args=FLIGHT_ARGS, config=config) as server:
        client = flight.connect(flight_url(server))
        held = ipc_bytes(sample(300_000), batch_rows=20_000)  # batches within the limit
        with (
            holding_the_streaming_writer(server, held),
            httpx.Client(base_url=server.url, timeout=30) as http,
        ):
            expect_error(  # one 9 MB batch: past the 1 MiB of a small put, and the limit
                lambda: put(client, path("too_large"), sample(300_000)),
                "payload_too_large",
                "resource_exhausted",
            )
            expect_error(  # a large put within the limits waits for a writer as before
                lambda: put(client, path("fits"), sample(50_000)),
                "overloaded",
                "unavailable",
            )
            assert http.get("/tables/too_large").status_code == 404
        client.close()
        assert server.healthy()


# -- concurrency ---------------------------------------------------------------------------------


def test_concurrent_flight_puts_and_http_posts_all_land(
    flight_server: ArrowportProcess, http: httpx.Client
) -> None:
    threads, requests, rows = 8, 25, 40
    table = "concurrent_mix"
    # Create the table first so every writer appends.
    with flight.connect(flight_url(flight_server)) as setup:
        put(setup, path(table), sample(1, -1))

    def flight_worker(worker: int) -> int:
        client = flight.connect(flight_url(flight_server))
        try:
            landed = 0
            for i in range(requests):
                start = (worker * requests + i) * rows
                reply = put(client, command(stream_name=table), sample(rows, start))
                landed += reply["rows_processed"]
            return landed
        finally:
            client.close()

    def http_worker(worker: int) -> int:
        landed = 0
        with httpx.Client(base_url=flight_server.url, timeout=120) as client:
            for i in range(requests):
                start = 1_000_000 + (worker * requests + i) * rows
                response = client.post(
                    f"/stream/{table}",
                    content=ipc_bytes(sample(rows, start)),
                    headers={"Content-Type": ARROW_STREAM},
                )
                assert response.status_code == 200, response.text
                landed += response.json()["rows_processed"]
        return landed

    with ThreadPoolExecutor(2 * threads) as pool:
        futures = [pool.submit(flight_worker, w) for w in range(threads)]
        futures += [pool.submit(http_worker, w) for w in range(threads)]
        landed = sum(f.result() for f in futures)
    expected = 2 * threads * requests * rows
    assert landed == expected
    assert count(http, table) == expected + 1
    distinct = query(http, f"SELECT count(DISTINCT id) AS n FROM {table}").column("n")[0]
    assert distinct.as_py() == expected + 1
    assert flight_server.healthy()


def test_a_query_whose_call_ends_is_stopped_and_gives_its_turn_back(tmp_path: Path) -> None:
    """A DoGet that gives up (its deadline passes) while its query runs stops the query: with
    one query turn, the next read gets it within seconds."""
    long_query = {"sql": ENDLESS_QUERY}
    with ArrowportProcess(tmp_path, args=FLIGHT_ARGS, config=ONE_QUERY_TURN) as server:
        client = flight.connect(flight_url(server))
        with pytest.raises(flight.FlightTimedOutError):
            client.do_get(
                ticket(long_query), options=flight.FlightCallOptions(timeout=2)
            ).read_all()
        gone = time.monotonic()
        while True:
            try:
                answer = client.do_get(ticket({"sql": "SELECT 1 AS one"})).read_all()
                break
            except flight.FlightUnavailableError:  # overloaded: the turn is still held
                if time.monotonic() - gone > 20:
                    raise
                time.sleep(0.1)
        assert answer.to_pylist() == [{"one": 1}]
        client.close()
        assert server.healthy()


# -- start-up and shutdown -----------------------------------------------------------------------


def test_flight_can_be_disabled(tmp_path: Path) -> None:
    env = {"ARROWPORT_FLIGHT_ENABLED": "false"}
    with ArrowportProcess(tmp_path / "off", env=env) as server:
        assert "flight_port" not in server.ready
        assert server.healthy()


def test_flight_port_from_the_environment(tmp_path: Path) -> None:
    with ArrowportProcess(tmp_path / "env", env={"ARROWPORT_FLIGHT_PORT": "0"}) as server:
        port = int(server.ready["flight_port"])
        assert port > 0
        with flight.connect(f"grpc://127.0.0.1:{port}") as client:
            assert put(client, path("via_env"), sample(3))["rows_processed"] == 3


def test_a_taken_flight_port_stops_start_up_with_one_clear_line(
    flight_server: ArrowportProcess, tmp_path: Path
) -> None:
    taken = str(flight_server.ready["flight_port"])
    second = ArrowportProcess(tmp_path / "second", args=["--flight-port", taken])
    with pytest.raises(RuntimeError, match="exited during start-up"):
        second.start()
    assert second.wait_for_exit() == 1
    reasons = [line for line in second.lines if line.startswith("arrowport: ")]
    assert len(reasons) == 1
    assert f"cannot serve Arrow Flight on 127.0.0.1:{taken}" in reasons[0]
    assert not [line for line in second.lines if "Traceback" in line]
    assert flight_server.healthy()


def test_sigterm_lets_a_running_put_commit(tmp_path: Path) -> None:
    server = ArrowportProcess(tmp_path / "drain", args=FLIGHT_ARGS).start()
    try:
        client = flight.connect(flight_url(server))
        data = sample(200_000)
        writer, reader = client.do_put(path("drained"), data.schema)
        batches = data.to_batches(max_chunksize=10_000)
        for batch in batches[:10]:
            writer.write_batch(batch)
        time.sleep(1.0)  # the put is under way on the server
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGTERM)
        time.sleep(0.5)
        for batch in batches[10:]:
            writer.write_batch(batch)
        writer.done_writing()
        reply = reader.read()
        writer.close()
        client.close()
        assert reply is not None
        assert json.loads(reply.to_pybytes())["rows_processed"] == 200_000
        assert server.wait_for_exit(60) == 0
    finally:
        server.kill()
    with duckdb.connect(str(server.db_path), read_only=True) as db:
        row = db.execute("SELECT count(*) FROM drained").fetchone()
    assert row is not None
    assert row[0] == 200_000


def test_new_puts_after_sigterm_are_refused_or_rejected(tmp_path: Path) -> None:
    server = ArrowportProcess(tmp_path / "closing", args=FLIGHT_ARGS).start()
    holder = flight.connect(flight_url(server))
    other = flight.connect(flight_url(server))
    try:
        data = sample(1000)
        writer, reader = holder.do_put(path("held"), data.schema)
        writer.write_batch(data.to_batches()[0])
        time.sleep(1.0)
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGTERM)
        time.sleep(0.5)
        # The server is draining: a new put is refused (shutting_down) or not accepted at all.
        with pytest.raises(flight.FlightError) as caught:
            put(other, path("late"), sample(5))
        assert isinstance(caught.value, flight.FlightUnavailableError)
        writer.done_writing()
        assert reader.read() is not None
        writer.close()
        assert server.wait_for_exit(60) == 0
    finally:
        holder.close()
        other.close()
        server.kill()
    with duckdb.connect(str(server.db_path), read_only=True) as db:
        tables = {row[0] for row in db.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    assert "held" in tables
    assert "late" not in tables


# -- write options, delivery and actions ------------------------------------------------------


def test_put_command_carries_write_modes_and_dry_run(
    fc: flight.FlightClient, http: httpx.Client
) -> None:
    upsert = {"stream_name": "fl_users", "mode": "upsert", "key_columns": ["id"]}
    put(fc, command(**upsert), pa.table({"id": [1, 2], "name": ["a", "b"]}))
    put(fc, command(**upsert), pa.table({"id": [2, 3], "name": ["B", "c"]}))
    rows = http.post(
        "/query",
        json={"sql": "SELECT * FROM fl_users ORDER BY id"},
        headers={"Accept": "application/json"},
    ).json()["rows"]
    assert rows == [{"id": 1, "name": "a"}, {"id": 2, "name": "B"}, {"id": 3, "name": "c"}]

    dry = put(
        fc,
        command(stream_name="fl_users", schema_policy="evolve", dry_run=True),
        pa.table({"id": [9], "name": ["z"], "email": ["z@x"]}),
    )
    assert dry["dry_run"] is True
    assert any("ADD COLUMN" in action for action in dry["actions"])
    assert count(http, "fl_users") == 3
    columns = [c["name"] for c in http.get("/tables/fl_users").json()["columns"]]
    assert columns == ["id", "name"]


def test_put_with_idempotency_key_lands_once_and_reports_bytes(
    fc: flight.FlightClient, http: httpx.Client
) -> None:
    batch = sample(100)
    first = put(fc, command(stream_name="fl_idem", idempotency_key="k-1"), batch)
    assert first["duplicate"] is False
    assert first["bytes"] > 0
    again = put(fc, command(stream_name="fl_idem", idempotency_key="k-1"), batch)
    assert again["duplicate"] is True
    assert again["rows_processed"] == 100
    expect_error(
        lambda: put(fc, command(stream_name="fl_idem", idempotency_key="k-1"), sample(3)),
        "idempotency_conflict",
        "already_exists",
    )
    assert count(http, "fl_idem") == 100


def test_producer_offsets_and_the_producer_offset_action(
    fc: flight.FlightClient, http: httpx.Client
) -> None:
    def offset() -> dict[str, Any]:
        body = json.dumps({"stream": "fl_prod", "producer_id": "p"}).encode()
        results = list(fc.do_action(flight.Action("producer_offset", body)))
        return json.loads(results[0].body.to_pybytes())  # type: ignore[no-any-return]

    assert offset()["last_sequence"] is None
    for sequence in (0, 1):
        put(fc, command(stream_name="fl_prod", producer_id="p", sequence=sequence), sample(10))
    duplicate = put(fc, command(stream_name="fl_prod", producer_id="p", sequence=1), sample(10))
    assert duplicate["duplicate"] is True
    expect_error(
        lambda: put(fc, command(stream_name="fl_prod", producer_id="p", sequence=5), sample(1)),
        "sequence_gap",
        "failed_precondition",
    )
    assert offset() == {
        "stream": "fl_prod",
        "producer_id": "p",
        "last_sequence": 1,
        "next_sequence": 2,
    }
    assert http.get("/streams/fl_prod/producers/p").json()["last_sequence"] == 1
    assert count(http, "fl_prod") == 20
    assert "producer_offset" in {a.type for a in fc.list_actions()}
    expect_error(
        lambda: list(fc.do_action(flight.Action("nope", b""))),
        "invalid_options",
        "invalid_argument",
    )
    for bad in (
        {"stream": "fl_prod", "producer_id": "p", "extra": 1},  # refused, as put commands do
        {"stream": "fl_prod", "producer_id": "\ud800"},  # was INTERNAL
    ):
        body = json.dumps(bad).encode()
        expect_error(
            lambda body=body: list(fc.do_action(flight.Action("producer_offset", body))),
            "invalid_options",
            "invalid_argument",
        )


@pytest.mark.parametrize("credentials", ["Basic !!not-base64", "Basic bm9jb2xvbg=="])
def test_without_tokens_a_handshake_with_malformed_credentials_is_answered(
    flight_server: ArrowportProcess, credentials: str
) -> None:
    """A server without tokens does not read credentials (HTTP ignores them): malformed Basic
    credentials were UNAUTHENTICATED on the Handshake alone."""
    channel = grpc.insecure_channel(f"127.0.0.1:{flight_server.flight_port}")
    handshake = channel.stream_stream(
        "/arrow.flight.protocol.FlightService/Handshake",
        request_serializer=lambda raw: raw,
        response_deserializer=lambda raw: raw,
    )
    try:
        answers = tuple(handshake(iter(()), metadata=[("authorization", credentials)], timeout=20))
    finally:
        channel.close()
    assert answers == ()
    assert flight_server.healthy()


def test_without_tokens_flight_is_open_and_the_handshake_still_answers(
    flight_server: ArrowportProcess, http: httpx.Client
) -> None:
    # Clients written for a secured server keep working against a loopback development server.
    with flight.connect(flight_url(flight_server)) as client:
        header = client.authenticate_basic_token(b"dev", b"anything")
        assert header == (b"authorization", b"Bearer anything")
        options = flight.FlightCallOptions(headers=[header])
        writer, _ = client.do_put(path("fl_open_handshake"), sample(5).schema, options=options)
        writer.write_table(sample(5))
        writer.close()
        assert client.do_get(ticket("fl_open_handshake"), options=options).read_all().num_rows == 5
    assert count(http, "fl_open_handshake") == 5


class MessageAuth(flight.ClientAuthHandler):  # type: ignore[misc]
    """An auth handler that exchanges messages: it sends one and reads the server's reply
    before it ends the Handshake (pyarrow's ``ClientAuthHandler`` pattern)."""

    def __init__(self) -> None:
        super().__init__()
        self.reply: bytes | None = None

    def authenticate(self, outgoing: Any, incoming: Any) -> None:
        outgoing.write(b"credentials")
        self.reply = incoming.read()

    def get_token(self) -> bytes:
        return b""


def test_a_handshake_answers_each_message_at_once(
    flight_server: ArrowportProcess, http: httpx.Client
) -> None:
    """Each Handshake message gets an empty reply: such a handler waited for one until
    ``limits.body_timeout_seconds`` (60 s) ended the call DEADLINE_EXCEEDED."""
    with flight.connect(flight_url(flight_server)) as client:
        handler = MessageAuth()
        started = time.monotonic()
        client.authenticate(handler, options=flight.FlightCallOptions(timeout=10))
        assert time.monotonic() - started < 5
        assert handler.reply == b""
        put(client, path("fl_message_auth"), sample(4))
    assert count(http, "fl_message_auth") == 4


@pytest.mark.parametrize("header", ["arrowport.idempotency_key", "arrowport.sequence"])
def test_a_put_option_sent_as_a_call_header_is_refused(
    fc: flight.FlightClient, http: httpx.Client, header: str
) -> None:
    """Flight SQL's ingestion reads ``arrowport.*`` call headers; a plain put reads its command
    only, and ignored an idempotency key sent that way (a retry then landed twice)."""
    options = flight.FlightCallOptions(headers=[(header.encode(), b"7")])
    for descriptor in (path("fl_header_option"), command(stream_name="fl_header_option")):
        message = expect_error(
            lambda descriptor=descriptor: put(fc, descriptor, sample(2), options),
            "invalid_options",
            "invalid_argument",
        )
        assert f"the call header '{header}' is not read by a plain Flight put" in message
    assert http.get("/tables/fl_header_option").status_code == 404


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        # Each was refused with a message that misnamed the mistake.
        ({"stream_name": 5}, "stream_name must be a string"),  # "stream_name is required"
        ({"stream_name": "s", "target_table": 5}, "target_table must be a string"),  # "table"
        ({"stream_name": "s", "chunk_size": 1.5}, "chunk_size must be an integer"),  # "a number"
        ({"stream_name": "s", "dry_run": "yes"}, "dry_run must be true or false"),  # "a true or"
    ],
)
def test_a_put_option_of_the_wrong_type_is_named_as_such(
    fc: flight.FlightClient, fields: dict[str, Any], expected: str
) -> None:
    message = expect_error(
        lambda: put(fc, command(**fields), sample(1)), "invalid_options", "invalid_argument"
    )
    assert message == f"invalid_options: the put command: {expected}", message


def test_describing_a_query_without_its_parameters_says_they_are_missing(
    fc: flight.FlightClient,
) -> None:
    """A query with placeholders described without ``params`` was refused with DuckDB's "This
    type of statement can't be prepared!", as if it could never take parameters."""
    descriptor = command(sql="SELECT ? AS a, ? AS b")
    for describe in (fc.get_flight_info, fc.get_schema):
        message = expect_error(
            lambda describe=describe: describe(descriptor), "query_error", "invalid_argument"
        )
        assert "the query takes parameters (1, 2) and no values were sent for them" in message
    described = fc.get_schema(command(sql="SELECT ? AS a", params=[1])).schema
    assert described.names == ["a"]


def test_an_upsert_without_key_columns_says_how_a_flight_put_sends_them(
    fc: flight.FlightClient,
) -> None:
    """The refusal named only HTTP's query parameter (``?key_columns=a,b``), which a Flight put
    cannot send."""
    message = expect_error(
        lambda: put(fc, command(stream_name="fl_upsert_no_keys", mode="upsert"), sample(1)),
        "invalid_options",
        "invalid_argument",
    )
    assert 'a Flight put command: "key_columns": ["a", "b"]' in message, message
