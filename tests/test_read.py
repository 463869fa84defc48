"""The read path (``/tables``, ``/query``, ``/streams``) and observability (metrics, request ids)."""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import duckdb
import httpx
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from tests.conftest import ARROW_STREAM, ENDLESS_QUERY, grpc_error, ipc_bytes, metric, query
from tests.server import ArrowportProcess, free_port

ON_LAKE = True  # every test on the module's server runs on the DuckDB file and on a DuckLake


def land(client: httpx.Client, stream: str, table: pa.Table, **params: str) -> None:
    response = client.post(
        f"/stream/{stream}",
        content=ipc_bytes(table),
        params=params,
        headers={"Content-Type": ARROW_STREAM},
    )
    assert response.status_code == 200, response.text


def people(rows: int = 3) -> pa.Table:
    return pa.table(
        {
            "id": pa.array(range(rows), pa.int64()),
            "name": pa.array([f"p{i}" for i in range(rows)], pa.string()),
            "height": pa.array([1.5 + i / 10 for i in range(rows)], pa.float64()),
        }
    )


@pytest.fixture(scope="module")
def read_table(server: ArrowportProcess) -> str:
    with httpx.Client(base_url=server.url, timeout=60) as client:
        land(client, "people", people(5))
    return "people"


def row_count(client: httpx.Client, table: str) -> int:
    count: int = query(client, f"SELECT count(*) AS n FROM {table}").column("n")[0].as_py()
    return count


# -- tables --------------------------------------------------------------------------------------


def test_list_tables(client: httpx.Client, read_table: str) -> None:
    land(client, "zz_second", people(1))
    response = client.get("/tables")
    assert response.status_code == 200
    tables = {t["name"]: t for t in response.json()}
    assert tables[read_table]["row_count"] == 5
    assert tables["zz_second"]["row_count"] == 1
    assert [c["name"] for c in tables[read_table]["columns"]] == ["id", "name", "height"]


def test_describe_table(client: httpx.Client, read_table: str) -> None:
    response = client.get(f"/tables/{read_table}")
    assert response.status_code == 200
    assert response.json() == {
        "name": "people",
        "columns": [
            {"name": "id", "type": "BIGINT", "nullable": True},
            {"name": "name", "type": "VARCHAR", "nullable": True},
            {"name": "height", "type": "DOUBLE", "nullable": True},
        ],
        "row_count": 5,
    }


def test_describe_table_not_null_and_types(client: httpx.Client) -> None:
    schema = pa.schema(
        [
            pa.field("k", pa.int32(), nullable=False),
            pa.field("at", pa.timestamp("ms", tz="Europe/Paris")),
            pa.field("d", pa.date32()),
            pa.field("flag", pa.bool_()),
        ]
    )
    table = pa.table(
        {"k": [1], "at": [1_700_000_000_000], "d": [19_000], "flag": [True]}, schema=schema
    )
    land(client, "described", table)
    columns = client.get("/tables/described").json()["columns"]
    assert columns == [
        {"name": "k", "type": "INTEGER", "nullable": False},
        {"name": "at", "type": "TIMESTAMP WITH TIME ZONE", "nullable": True},
        {"name": "d", "type": "DATE", "nullable": True},
        {"name": "flag", "type": "BOOLEAN", "nullable": True},
    ]


@pytest.mark.parametrize("name", ["no_such_table", "bad;name"])
def test_missing_table_is_404_or_400(client: httpx.Client, name: str) -> None:
    response = client.get(f"/tables/{name}")
    expected = 404 if name == "no_such_table" else 400
    assert response.status_code == expected, response.text
    body = response.json()
    assert body["status"] == "error"
    assert body["code"] == ("unknown_table" if expected == 404 else "invalid_name")


# -- query ---------------------------------------------------------------------------------------


def test_query_answers_arrow_ipc_by_default(client: httpx.Client, read_table: str) -> None:
    response = client.post("/query", json={"sql": f"SELECT * FROM {read_table} ORDER BY id"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(ARROW_STREAM)
    table = pa.ipc.open_stream(response.content).read_all()
    assert table.to_pylist() == people(5).to_pylist()
    assert response.content.endswith(b"\xff\xff\xff\xff\x00\x00\x00\x00")


def test_rows_of_a_few_mb_render_as_csv_and_json(client: httpx.Client) -> None:
    """Rows are sized by their own bytes when they are rendered one by one: 25 rows of 3 MB
    (75 MB in all) were refused as "a row larger than 64 MB", each one-row slice counting the
    buffers of its whole batch."""
    sql = "SELECT repeat(printf('%0300d', r), 10000) AS s FROM range(25) t(r)"
    for accept in ("text/csv", "application/json"):
        response = client.post("/query", json={"sql": sql}, headers={"Accept": accept})
        assert response.status_code == 200, response.text[:300]
        if accept == "text/csv":
            lines = response.text.splitlines()
            assert len(lines) == 26
            assert lines[25].strip('"') == f"{24:0300d}" * 10_000
        else:
            rows = response.json()["rows"]
            assert [row["s"] for row in rows] == [f"{r:0300d}" * 10_000 for r in range(25)]


def test_a_row_too_large_to_render_is_refused_among_small_ones(client: httpx.Client) -> None:
    """A 70 MB value among 8,191 short ones went into a slice of many rows, past the check of
    single rows, and was rendered as JSON whole. It is cut down to its row, and refused as
    such; the Arrow answer has it."""
    sql = "SELECT if(r = 5, repeat(printf('%010000d', r), 7000), 'x') AS s FROM range(8192) t(r)"
    for accept in ("text/csv", "application/json"):
        response = client.post("/query", json={"sql": sql}, headers={"Accept": accept})
        assert response.status_code == 413, response.text[:300]
        assert response.json()["code"] == "result_too_large"
        assert "a row of the answer is larger than" in response.json()["message"]
    table = query(client, sql)
    assert table.column("s")[5].as_py() == f"{5:010000d}" * 7000
    assert table.column("s")[6].as_py() == "x"


def test_repeated_names_in_an_answer_are_told_apart(client: httpx.Client) -> None:
    """JSON keys must differ: repeats of a name get the first free suffix, whatever else the
    answer is named (a, a_3, a_4, a_5, a_2)."""
    sql = "SELECT 1 AS a, 2 AS a, 3 AS a, 4 AS a, 5 AS a_2"
    response = client.post("/query", json={"sql": sql}, headers={"Accept": "application/json"})
    assert response.status_code == 200, response.text
    assert response.json()["rows"] == [{"a": 1, "a_3": 2, "a_4": 3, "a_5": 4, "a_2": 5}]


def test_query_answers_json(client: httpx.Client, read_table: str) -> None:
    response = client.post(
        "/query",
        json={"sql": f"SELECT id, name FROM {read_table} WHERE id < 2 ORDER BY id"},
        headers={"Accept": "application/json"},
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["rows"] == [{"id": 0, "name": "p0"}, {"id": 1, "name": "p1"}]
    assert body["row_count"] == 2
    assert [c["name"] for c in body["columns"]] == ["id", "name"]


def test_query_answers_csv(client: httpx.Client, read_table: str) -> None:
    response = client.post(
        "/query",
        json={"sql": f"SELECT id, name FROM {read_table} ORDER BY id LIMIT 2"},
        headers={"Accept": "text/csv"},
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(response.text)))
    assert rows == [["id", "name"], ["0", "p0"], ["1", "p1"]]


def test_query_text_plain_body(client: httpx.Client, read_table: str) -> None:
    response = client.post(
        "/query",
        content=f"SELECT max(id) AS top FROM {read_table}",
        headers={"Content-Type": "text/plain", "Accept": "application/json"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["rows"] == [{"top": 4}]


def test_query_params(client: httpx.Client, read_table: str) -> None:
    response = client.post(
        "/query",
        json={
            "sql": f"SELECT name FROM {read_table} WHERE id = ? OR name = ?",
            "params": [1, "p3"],
        },
        headers={"Accept": "application/json"},
    )
    assert response.status_code == 200, response.text
    assert sorted(r["name"] for r in response.json()["rows"]) == ["p1", "p3"]
    response = client.post(
        "/query",
        json={"sql": "SELECT $1::INTEGER + 1 AS answer", "params": [41]},
        headers={"Accept": "application/json"},
    )
    assert response.json()["rows"] == [{"answer": 42}]


def test_query_injection_through_params_is_inert(client: httpx.Client, read_table: str) -> None:
    response = client.post(
        "/query",
        json={
            "sql": f"SELECT count(*) AS n FROM {read_table} WHERE name = ?",
            "params": ["x' OR '1'='1"],
        },
        headers={"Accept": "application/json"},
    )
    assert response.json()["rows"] == [{"n": 0}]


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO people VALUES (99, 'intruder', 2.0)",
        "DELETE FROM people",
        "UPDATE people SET name = 'x'",
        "CREATE TABLE sneaky (a INT)",
        "DROP TABLE people",
        "COPY people TO 'stolen.csv'",
        "ATTACH 'other.duckdb' AS other",
        "SET threads = 1",
        "SELECT 1; DELETE FROM people",
        "SELECT 1; SELECT 2",
        "WITH gone AS (DELETE FROM people RETURNING *) SELECT * FROM gone",
        "CREATE OR REPLACE TABLE people AS SELECT 1 AS a",
    ],
)
def test_modifying_statement_is_refused(
    client: httpx.Client, server: ArrowportProcess, read_table: str, sql: str
) -> None:
    before = client.get(f"/tables/{read_table}").json()
    response = client.post("/query", json={"sql": sql})
    assert response.status_code in (400, 403), response.text
    if "RETURNING" not in sql:
        assert response.status_code == 403, response.text
        assert response.json()["code"] == "read_only"
    assert "Traceback" not in response.text
    assert client.get(f"/tables/{read_table}").json() == before
    assert client.get("/tables/sneaky").status_code == 404
    assert not (server.workdir / "stolen.csv").exists()
    assert not (server.workdir / "other.duckdb").exists()


def test_modifying_text_plain_is_refused(client: httpx.Client, read_table: str) -> None:
    before = row_count(client, read_table)
    response = client.post(
        "/query", content=f"DELETE FROM {read_table}", headers={"Content-Type": "text/plain"}
    )
    assert response.status_code == 403
    assert response.json()["code"] == "read_only"
    assert row_count(client, read_table) == before


@pytest.mark.parametrize("sql", ["SELEC 1", "SELECT * FROM no_such_table", "SELECT 1 +"])
def test_query_error_is_400(client: httpx.Client, sql: str) -> None:
    response = client.post("/query", json={"sql": sql})
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "query_error"
    assert "Traceback" not in response.text


def test_query_unsupported_content_type(client: httpx.Client) -> None:
    response = client.post(
        "/query", content=b"SELECT 1", headers={"Content-Type": "application/xml"}
    )
    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_media_type"


def test_every_table_listed_can_be_described_by_its_listed_name(tmp_path: Path) -> None:
    """Tables made by SQL outside the server may hold dots in their schema's or their own
    names: listed as s2.a.b (table "a.b" of schema s2), they were 400 invalid_name when asked
    for by that name."""
    path = tmp_path / "db.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute('CREATE SCHEMA s2; CREATE TABLE s2."a.b" (y INTEGER)')
        con.execute('CREATE SCHEMA "x.y"; CREATE TABLE "x.y".t (z INTEGER)')
        con.execute('CREATE TABLE "a.b" (x INTEGER); CREATE TABLE s2.plain (w INTEGER)')
    with (
        ArrowportProcess(tmp_path, db_path=path) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        listed = {t["name"]: t for t in client.get("/tables").json()}
        assert set(listed) == {"a.b", "s2.a.b", "s2.plain", "x.y.t"}
        for name, info in listed.items():
            response = client.get(f"/tables/{name}")
            assert response.status_code == 200, response.text
            assert response.json() == info


def test_a_function_that_does_not_exist_is_a_query_error_not_a_refusal(tmp_path: Path) -> None:
    """A misspelt function was 403 read_only "not allowed", as if it were held back; it is 400
    query_error, as a misspelt table is, with the nearest allowed name. A function (or macro)
    that exists and is not allowed is refused as before."""
    path = tmp_path / "db.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE t AS SELECT 1 AS x")
        con.execute("CREATE MACRO twice(a) AS a * 2")
    with (
        ArrowportProcess(tmp_path, db_path=path) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        for sql, name, hint in [
            ("SELECT coutn(*) FROM t", "coutn", "; did you mean count()?"),
            ("SELECT row_numbr() OVER () FROM t", "row_numbr", "; did you mean row_number()?"),
            ("SELECT * FROM generate_seriez(1, 3)", "generate_seriez", "generate_series()?"),
            ("SELECT qqqzzz(x) FROM t", "qqqzzz", ""),
        ]:
            response = client.post("/query", json={"sql": sql})
            assert response.status_code == 400, response.text
            body = response.json()
            assert (body["code"], body["function"]) == ("query_error", name)
            assert f"function {name}() does not exist" in body["message"]
            assert body["message"].endswith(hint)
            assert ("did you mean" in body["message"]) == bool(hint)
        for sql, name in [
            ("SELECT twice(x) FROM t", "twice"),
            ("FROM read_text('x')", "read_text"),
        ]:
            response = client.post("/query", json={"sql": sql})
            assert response.status_code == 403, response.text
            assert (response.json()["code"], response.json()["function"]) == ("read_only", name)


def test_a_view_is_refused_as_a_view_not_said_not_to_exist(tmp_path: Path) -> None:
    """Views (made outside the server) are not readable; the refusal said 400 "table 'v' does
    not exist", sending the user to look for a typo."""
    path = tmp_path / "db.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE t AS SELECT 1 AS x")
        con.execute("CREATE VIEW v AS SELECT x FROM t")
    with (
        ArrowportProcess(tmp_path, db_path=path) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        for sql, name in [
            ("SELECT * FROM v", "v"),
            ("SELECT * FROM V", "V"),
            ("WITH w AS (FROM v) FROM w", "v"),
        ]:
            response = client.post("/query", json={"sql": sql})
            assert response.status_code == 403, response.text
            body = response.json()
            assert (body["code"], body["table"]) == ("read_only", name)
            assert "view" in body["message"]
        missing = client.post("/query", json={"sql": "SELECT * FROM nothing"})
        assert missing.status_code == 400, missing.text
        assert missing.json()["code"] == "query_error"
        assert client.post("/query", json={"sql": "SELECT * FROM t"}).status_code == 200


@pytest.mark.parametrize("encoding", ["gzip", "zstd", "br"])
@pytest.mark.parametrize("content_type", ["application/json", "text/plain"])
def test_a_compressed_query_body_is_415(
    client: httpx.Client, encoding: str, content_type: str
) -> None:
    """The body was read as it came: gzip's bytes were 400 invalid_json, or 422 not UTF-8."""
    body = json.dumps({"sql": "SELECT 1"}) if content_type == "application/json" else "SELECT 1"
    packed = gzip.compress(body.encode()) if encoding == "gzip" else body.encode()
    response = client.post(
        "/query",
        content=packed,
        headers={"Content-Type": content_type, "Content-Encoding": encoding},
    )
    assert response.status_code == 415, response.text
    assert response.json()["code"] == "unsupported_media_type"
    assert encoding in response.json()["message"]
    plain = client.post("/query", content=body, headers={"Content-Type": content_type})
    assert plain.status_code == 200, plain.text


# -- streams -------------------------------------------------------------------------------------


def test_streams_empty_without_config(client: httpx.Client) -> None:
    response = client.get("/streams")
    assert response.status_code == 200
    assert response.json() == []


STREAMS_CONFIG = {
    "streams": {
        "clicks": {"table": "click_events", "mode": "append", "chunk_size": 500},
        "orders": {"mode": "append"},
    },
    "streams_only": True,
}


@pytest.fixture(scope="module")
def streams_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArrowportProcess]:
    """Configured streams, ``streams_only`` and a separate metrics port."""
    port = free_port()
    config = STREAMS_CONFIG | {"api": {"metrics_port": port}}
    with ArrowportProcess(Path(tmp_path_factory.mktemp("streams")), config=config) as process:
        yield process


def test_streams_lists_configured_streams(streams_server: ArrowportProcess) -> None:
    with httpx.Client(base_url=streams_server.url) as client:
        streams = {s["name"]: s for s in client.get("/streams").json()}
    assert set(streams) == {"clicks", "orders"}
    assert streams["clicks"]["table"] == "click_events"
    assert streams["clicks"]["chunk_size"] == 500
    assert streams["clicks"]["mode"] == "append"
    assert streams["orders"]["table"] == "orders"


def test_streams_only_refuses_unknown_stream(streams_server: ArrowportProcess) -> None:
    with httpx.Client(base_url=streams_server.url) as client:
        response = client.post(
            "/stream/unknown_one",
            content=ipc_bytes(people()),
            headers={"Content-Type": ARROW_STREAM},
        )
        assert response.status_code == 404, response.text
        assert response.json()["code"] == "unknown_stream"
        assert response.json()["stream"] == "unknown_one"
        assert client.get("/tables/unknown_one").status_code == 404
        json_response = client.post("/stream/unknown_two", json={"batch": {"data": ""}})
        assert json_response.status_code == 404, json_response.text
        assert client.get("/health").status_code == 200


def test_streams_only_answers_no_producer_offset_of_an_unknown_stream(
    streams_server: ArrowportProcess,
) -> None:
    with httpx.Client(base_url=streams_server.url) as client:
        for path in ("/streams/nope", "/streams/nope/producers/x"):
            response = client.get(path)
            assert response.status_code == 404, response.text
            assert (response.json()["code"], response.json()["stream"]) == (
                "unknown_stream",
                "nope",
            )
        known = client.get("/streams/orders/producers/x")
        assert known.status_code == 200, known.text
        assert known.json()["last_sequence"] is None
    body = json.dumps({"stream": "nope", "producer_id": "x"}).encode()
    with (
        flight.FlightClient(streams_server.flight_url) as fc,
        pytest.raises(pa.ArrowException) as refused,
    ):
        list(fc.do_action(flight.Action("producer_offset", body)))
    status, message = grpc_error(refused.value)
    assert (status, message.split(":")[0]) == ("NOT_FOUND", "unknown_stream")


def test_configured_stream_lands_in_its_table(streams_server: ArrowportProcess) -> None:
    with httpx.Client(base_url=streams_server.url) as client:
        land(client, "clicks", people(4))
        assert client.get("/tables/clicks").status_code == 404
        assert row_count(client, "click_events") == 4
        land(client, "orders", people(2))
        assert row_count(client, "orders") == 2


# -- health and observability --------------------------------------------------------------------


def test_health_and_ready(client: httpx.Client) -> None:
    assert client.get("/health").status_code == 200
    assert client.get("/ready").status_code == 200


def _metric(text: str, name: str, stream: str) -> float:
    pattern = re.compile(rf'^{name}\{{[^}}]*stream="{stream}"[^}}]*\}} (\S+)$', re.MULTILINE)
    match = pattern.search(text)
    return float(match.group(1)) if match else 0.0


def test_metrics_count_ingests(client: httpx.Client) -> None:
    before = client.get("/metrics")
    assert before.status_code == 200
    assert before.headers["content-type"].startswith("text/plain")
    rows_before = _metric(before.text, "arrowport_ingested_rows_total", "metered")
    land(client, "metered", people(7))
    land(client, "metered", people(3))
    after = client.get("/metrics").text
    assert _metric(after, "arrowport_ingested_rows_total", "metered") == rows_before + 10
    assert _metric(after, "arrowport_ingested_batches_total", "metered") >= 2
    assert _metric(after, "arrowport_ingested_bytes_total", "metered") > 0
    assert "arrowport_request_duration_seconds_bucket" in after
    # Binary ingests are labelled with the route's template, not the stream's path.
    assert re.search(
        r'^arrowport_request_duration_seconds_count\{[^}]*route="/stream/\{stream_name\}"'
        r'[^}]*status="200"[^}]*\} [1-9]',
        after,
        re.M,
    )
    assert "/stream/metered" not in after


def test_metrics_count_errors(client: httpx.Client) -> None:
    def errors(text: str) -> float:
        match = re.search(r'^arrowport_errors_total\{code="invalid_json"[^}]*\} (\S+)$', text, re.M)
        return float(match.group(1)) if match else 0.0

    before = errors(client.get("/metrics").text)
    response = client.post(
        "/stream/broken", content=b"{", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert errors(client.get("/metrics").text) == before + 1


def test_metrics_port(streams_server: ArrowportProcess) -> None:
    assert streams_server.config is not None
    port = streams_server.config["api"]["metrics_port"]
    assert streams_server.ready["metrics_port"] == port
    url = f"http://127.0.0.1:{port}/metrics"
    before = _metric(httpx.get(url, timeout=10).text, "arrowport_ingested_rows_total", "orders")
    with httpx.Client(base_url=streams_server.url) as client:
        land(client, "orders", people(6))
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200
    assert _metric(response.text, "arrowport_ingested_rows_total", "orders") == before + 6


def test_metrics_disabled(tmp_path: Path) -> None:
    config = {"api": {"enable_metrics": False}}
    with (
        ArrowportProcess(tmp_path, config=config) as server,
        httpx.Client(base_url=server.url) as client,
    ):
        response = client.get("/metrics")
        assert response.status_code == 404
        assert client.get("/health").status_code == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/health"), ("GET", "/tables"), ("GET", "/tables/nope"), ("POST", "/stream/x")],
)
def test_every_response_has_request_id(client: httpx.Client, method: str, path: str) -> None:
    response = client.request(method, path)
    assert re.fullmatch(r"[A-Za-z0-9._-]{8,128}", response.headers["x-request-id"])
    other = client.request(method, path)
    assert other.headers["x-request-id"] != response.headers["x-request-id"]


def test_request_id_is_echoed(client: httpx.Client) -> None:
    response = client.get("/health", headers={"X-Request-ID": "trace-abc.123_XYZ"})
    assert response.headers["x-request-id"] == "trace-abc.123_XYZ"
    response = client.post(
        "/stream/echoed",
        content=b"junk",
        headers={"Content-Type": ARROW_STREAM, "X-Request-ID": "req-42"},
    )
    assert response.status_code == 400
    assert response.headers["x-request-id"] == "req-42"


def test_unsafe_request_id_is_replaced(client: httpx.Client) -> None:
    response = client.get("/health", headers={"X-Request-ID": "bad id\twith spaces"})
    assert response.headers["x-request-id"] != "bad id\twith spaces"
    assert re.fullmatch(r"[A-Za-z0-9._-]+", response.headers["x-request-id"])


def test_openapi_docs(client: httpx.Client) -> None:
    assert client.get("/docs").status_code == 200
    schema = client.get("/openapi.json").json()
    assert "/stream/{stream_name}" in schema["paths"]
    assert "/query" in schema["paths"]


def test_query_with_empty_result(client: httpx.Client, read_table: str) -> None:
    result = query(client, f"SELECT id, name FROM {read_table} WHERE id < 0")
    assert result.num_rows == 0
    assert result.column_names == ["id", "name"]
    response = client.post(
        "/query",
        json={"sql": f"SELECT id FROM {read_table} WHERE id < 0"},
        headers={"Accept": "text/csv"},
    )
    assert response.status_code == 200
    assert response.text.strip() == '"id"' or response.text.strip() == "id"


def test_describe_table_case_insensitive(client: httpx.Client, read_table: str) -> None:
    response = client.get("/tables/PEOPLE")
    assert response.status_code == 200
    assert response.json()["name"] == read_table
    assert response.json()["row_count"] == 5


def test_query_json_with_non_finite_floats(client: httpx.Client) -> None:
    response = client.post(
        "/query",
        json={
            "sql": "SELECT 'nan'::DOUBLE AS a, 1/0 AS b, [1.5, 'inf'::DOUBLE] AS c, 2.5::DOUBLE AS d"
        },
        headers={"Accept": "application/json"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["rows"] == [{"a": None, "b": None, "c": [1.5, None], "d": 2.5}]


LATE_ERROR = (
    "SELECT CASE WHEN i > 200000 THEN error('late failure') ELSE i END AS x FROM range(300000) t(i)"
)


@pytest.mark.parametrize("accept", ["application/json", "text/csv"])
def test_query_failing_while_fetching_is_400(client: httpx.Client, accept: str) -> None:
    response = client.post("/query", json={"sql": LATE_ERROR}, headers={"Accept": accept})
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "query_error"
    # DuckDB stops the query's other threads when one fails, and now and then reports that
    # interruption instead of the first error (seen once in ~20 runs on 2 busy cores).
    message = response.json()["message"]
    assert "late failure" in message or "INTERRUPT Error" in message
    assert client.get("/health").status_code == 200


def test_query_failing_while_streaming_is_never_a_whole_stream(client: httpx.Client) -> None:
    """Once Arrow batches are on their way the status is sent; the stream then lacks its
    end-of-stream marker, so a reader fails instead of seeing fewer rows."""
    try:
        response = client.post("/query", json={"sql": LATE_ERROR})
    except httpx.HTTPError:
        response = None  # the server cut the chunked body
    if response is not None:
        if response.status_code == 200:
            assert not response.content.endswith(b"\xff\xff\xff\xff\x00\x00\x00\x00")
            with pytest.raises((pa.ArrowException, OSError)):
                pa.ipc.open_stream(response.content).read_all()
        else:
            assert response.status_code == 400
    with httpx.Client(base_url=str(client.base_url)) as fresh:
        assert fresh.get("/health").status_code == 200


def test_the_query_gauges_count_queries_running_and_waiting(tmp_path: Path) -> None:
    """``arrowport_queries_running`` and ``arrowport_queries_waiting`` show the query turns
    in use and the queries queued for one, and fall back to 0 when the queries end."""
    config = {
        "limits": {
            "max_concurrent_queries": 1,
            "max_queued_queries": 1,
            "query_timeout_seconds": 3,
        }
    }
    with (
        ArrowportProcess(tmp_path, config=config) as server,
        httpx.Client(base_url=server.url, timeout=60) as http,
    ):
        answers: list[int] = []

        def endless() -> None:
            with httpx.Client(base_url=server.url, timeout=60) as own:
                answers.append(own.post("/query", json={"sql": ENDLESS_QUERY}).status_code)

        first = threading.Thread(target=endless)
        first.start()
        wait_until(lambda: metric(http, "arrowport_queries_running") == 1, "a query to run")
        second = threading.Thread(target=endless)
        second.start()
        wait_until(lambda: metric(http, "arrowport_queries_waiting") == 1, "a query to wait")
        assert metric(http, "arrowport_queries_running") == 1
        first.join(30)
        second.join(30)
        assert answers == [408, 408]  # each ran out of its time
        assert metric(http, "arrowport_queries_running") == 0
        assert metric(http, "arrowport_queries_waiting") == 0


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
