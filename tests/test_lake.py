"""What is particular to the DuckLake target, on two real nodes sharing one lake.

The behaviour both targets share (ingest, write modes, delivery, reads, errors) is tested on
each by the modules that set ``ON_LAKE``; here: types a lake cannot hold, Flight on a lake, what
one node sees of another's writes, and what the lake's secrets and catalog look like from outside.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from tests.conftest import grpc_error, ipc_bytes, post_binary, query
from tests.lake import lake_config, new_lake_name, services
from tests.server import ArrowportProcess


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ArrowportProcess]]:
    config = lake_config(new_lake_name("pair"))
    first = ArrowportProcess(tmp_path_factory.mktemp("a"), config=config).start(timeout=60)
    second = ArrowportProcess(tmp_path_factory.mktemp("b"), config=config).start(timeout=60)
    try:
        yield [first, second]
    finally:
        second.stop(60)
        first.stop(60)


@pytest.fixture
def a(nodes: list[ArrowportProcess]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=nodes[0].url, timeout=60) as http:
        yield http


@pytest.fixture
def b(nodes: list[ArrowportProcess]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=nodes[1].url, timeout=60) as http:
        yield http


def table_names(client: httpx.Client) -> set[str]:
    response = client.get("/tables")
    assert response.status_code == 200, response.text
    return {table["name"] for table in response.json()}


UNSUPPORTED = {
    "time_ns": pa.array([datetime.time(1, 2, 3)], pa.time64("ns")),
    "fixed_list": pa.array([[1, 2]], pa.list_(pa.int32(), 2)),
    "dense_union": pa.UnionArray.from_dense(
        pa.array([0], pa.int8()), pa.array([0], pa.int32()), [pa.array([1])]
    ),
}


@pytest.mark.parametrize("column", sorted(UNSUPPORTED))
def test_a_type_the_lake_cannot_hold_is_refused_before_anything_lands(
    a: httpx.Client, column: str
) -> None:
    table = pa.table({"id": pa.array([1], pa.int64()), column: UNSUPPORTED[column]})
    stream = f"refused_{column}"
    response = post_binary(a, stream, ipc_bytes(table))
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "unsupported_type"
    assert column in body["message"]
    assert stream not in table_names(a)


def test_field_names_that_spell_a_refused_type_are_only_names(a: httpx.Client) -> None:
    fields = [
        pa.field("UNION", pa.int32()),
        pa.field("BIT", pa.int32()),
        pa.field("a[3]", pa.int32()),
    ]
    value = pa.array([{"UNION": 1, "BIT": 2, "a[3]": 3}], pa.struct(fields))
    response = post_binary(a, "named_like_types", ipc_bytes(pa.table({"s": value})))
    assert response.status_code == 200, response.text


def test_a_refused_type_in_a_later_batch_leaves_the_table_as_it_was(a: httpx.Client) -> None:
    good = pa.table({"id": pa.array([1, 2], pa.int64())})
    assert post_binary(a, "later_refusal", ipc_bytes(good)).status_code == 200
    bad = pa.table({"id": pa.array([3], pa.int64()), "t": UNSUPPORTED["time_ns"]})
    response = post_binary(a, "later_refusal", ipc_bytes(bad), params={"schema_policy": "evolve"})
    assert response.status_code == 422, response.text
    assert query(a, "SELECT * FROM later_refusal ORDER BY id").to_pylist() == [
        {"id": 1},
        {"id": 2},
    ]


PLACEHOLDER_VALUES = {
    # Inlined (a small write) and in a file (its statistics): DuckLake 1.5.5 replaces both.
    "small": pa.table({"id": pa.array([1], pa.int64()), "s": pa.array(["batch-{SNAPSHOT_ID}"])}),
    "large": pa.table(
        {
            "id": pa.array(range(5_000), pa.int64()),
            "s": pa.array(["{DATA_PATH}" if i == 4_999 else f"v{i}" for i in range(5_000)]),
        }
    ),
    "binary": pa.table({"id": pa.array([1], pa.int64()), "s": pa.array([b"{NEXT_FILE_ID}"])}),
    "nested": pa.table({"id": pa.array([1], pa.int64()), "s": pa.array([[{"k": "a{TABLE_ID}"}]])}),
}


@pytest.mark.parametrize("shape", sorted(PLACEHOLDER_VALUES))
def test_a_value_the_lake_would_change_as_it_commits_is_refused(
    a: httpx.Client, shape: str
) -> None:
    """DuckLake 1.5.5 replaces placeholders such as {SNAPSHOT_ID} in the SQL of its commits,
    values included: 'batch-{SNAPSHOT_ID}' had landed as 'batch-2'."""
    stream = f"placeholder_{shape}"
    first = pa.table({"id": pa.array([0], pa.int64())})
    assert post_binary(a, stream, ipc_bytes(first)).status_code == 200
    data = PLACEHOLDER_VALUES[shape]
    response = post_binary(
        a, stream, ipc_bytes(data, batch_rows=1_000), params={"schema_policy": "evolve"}
    )
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "invalid_value", response.text
    assert "column 's'" in response.json()["message"]
    assert query(a, f"SELECT * FROM {stream}").to_pylist() == [{"id": 0}]  # nothing partial


def test_names_and_keys_the_lake_would_change_are_refused(a: httpx.Client) -> None:
    column = pa.table({"{METADATA_CATALOG}": pa.array([1], pa.int64())})
    response = post_binary(a, "placeholder_names", ipc_bytes(column))
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "invalid_name"
    rows = pa.table({"id": pa.array([1], pa.int64())})
    for params, headers in (
        ({}, {"Idempotency-Key": "load-{SNAPSHOT_ID}"}),
        ({"producer_id": "load-{SNAPSHOT_ID}", "sequence": "0"}, {}),
    ):
        response = post_binary(
            a, "placeholder_keys", ipc_bytes(rows), params=params, headers=headers
        )
        assert response.status_code == 422, response.text
        assert response.json()["code"] == "invalid_options", response.text
    assert "placeholder_names" not in table_names(a)
    assert "placeholder_keys" not in table_names(a)
    # Braces alone, or a name DuckLake does not replace, land unchanged.
    kept = pa.table({"s": pa.array(["{SNAPSHOT_ID", "{snapshot_id}", "{NAME}", "{}"])})
    response = post_binary(
        a, "placeholder_kept", ipc_bytes(kept), headers={"Idempotency-Key": "{SNAPSHOT_ID"}
    )
    assert response.status_code == 200, response.text
    assert (
        query(a, "SELECT s FROM placeholder_kept").column("s").to_pylist()
        == kept.column("s").to_pylist()
    )


def test_a_query_the_lake_would_change_is_refused(a: httpx.Client) -> None:
    """A filter's values reach the catalog's SQL too (to skip files by their statistics):
    ``s < '{SNAPSHOT_ID}'`` was compared with a snapshot id, and counted no row of these."""
    rows = pa.table({"s": pa.array([f"a{i}" for i in range(2_000)])})
    assert post_binary(a, "placeholder_reads", ipc_bytes(rows)).status_code == 200
    for body in (
        {"sql": "SELECT count(*) AS n FROM placeholder_reads WHERE s < '{SNAPSHOT_ID}'"},
        # An escape DuckDB reads as a brace.
        {"sql": "SELECT count(*) AS n FROM placeholder_reads WHERE s < E'\\x7BSNAPSHOT_ID}'"},
        {
            "sql": "SELECT count(*) AS n FROM placeholder_reads WHERE s < ?",
            "params": ["{TABLE_ID}"],
        },
    ):
        response = a.post("/query", json=body)
        assert response.status_code == 422, response.text
        assert response.json()["code"] == "invalid_options"
    counted = query(a, "SELECT count(*) AS n FROM placeholder_reads WHERE s < '{'")
    assert counted.to_pylist() == [{"n": 2_000}]


def test_a_write_on_one_node_is_read_on_the_other(a: httpx.Client, b: httpx.Client) -> None:
    rows = pa.table({"id": pa.array(range(1000), pa.int64()), "v": pa.array(["x"] * 1000)})
    answer = post_binary(a, "shared_reads", ipc_bytes(rows, batch_rows=100))
    assert answer.status_code == 200, answer.text
    assert query(b, "SELECT count(*) AS n, sum(id) AS s FROM shared_reads").to_pylist() == [
        {"n": 1000, "s": sum(range(1000))}
    ]
    assert "shared_reads" in table_names(b)


def test_an_upsert_on_one_node_updates_rows_written_by_the_other(
    a: httpx.Client, b: httpx.Client
) -> None:
    first = pa.table({"k": pa.array([1, 2], pa.int64()), "v": pa.array(["a", "b"])})
    second = pa.table({"k": pa.array([2, 3], pa.int64()), "v": pa.array(["B", "c"])})
    keyed = {"mode": "upsert", "key_columns": "k"}
    assert post_binary(a, "keyed", ipc_bytes(first), params=keyed).status_code == 200
    answer = post_binary(b, "keyed", ipc_bytes(second), params=keyed)
    assert answer.status_code == 200, answer.text
    assert query(a, "SELECT k, v FROM keyed ORDER BY k").to_pylist() == [
        {"k": 1, "v": "a"},
        {"k": 2, "v": "B"},
        {"k": 3, "v": "c"},
    ]


def test_flight_put_on_one_node_and_get_on_the_other(nodes: list[ArrowportProcess]) -> None:
    rows = pa.table({"id": pa.array(range(50), pa.int64())})
    with flight.connect(nodes[0].flight_url) as put_client:
        descriptor = flight.FlightDescriptor.for_path("flight_lake")
        writer, reader = put_client.do_put(descriptor, rows.schema)
        writer.write_table(rows, max_chunksize=10)
        writer.done_writing()
        ack = json.loads(reader.read().to_pybytes())
        writer.close()
    assert ack["rows_processed"] == 50
    with flight.connect(nodes[1].flight_url) as get_client:
        ticket = flight.Ticket(json.dumps({"sql": "SELECT sum(id) AS s FROM flight_lake"}))
        assert get_client.do_get(ticket).read_all().to_pylist() == [{"s": sum(range(50))}]


def test_flight_refuses_a_type_the_lake_cannot_hold(nodes: list[ArrowportProcess]) -> None:
    rows = pa.table({"t": UNSUPPORTED["time_ns"]})

    def put() -> None:
        descriptor = flight.FlightDescriptor.for_path("flight_refused")
        with flight.connect(nodes[0].flight_url) as client:
            writer, reader = client.do_put(descriptor, rows.schema)
            writer.write_table(rows)
            writer.done_writing()
            reader.read()
            writer.close()

    with pytest.raises(pa.ArrowException) as raised:
        put()
    code, message = grpc_error(raised.value)
    assert code == "INVALID_ARGUMENT"
    assert message.startswith("unsupported_type")


def test_the_catalog_and_its_credentials_stay_out_of_reach(a: httpx.Client) -> None:
    env = services()
    password = env["ARROWPORT_TEST_PG_DSN"].split("password=")[1].split()[0]
    probes = [
        "SELECT * FROM duckdb_databases()",
        "SELECT * FROM duckdb_secrets()",
        "SELECT * FROM duckdb_settings()",
        "SELECT * FROM postgres_query('__ducklake_metadata_lake', 'SELECT 1')",
        "SELECT * FROM __ducklake_metadata_lake.ducklake_snapshot",
        "ATTACH 'postgres:dbname=postgres' AS other",
        "SELECT * FROM read_parquet('s3://" + env["ARROWPORT_TEST_S3_BUCKET"] + "/*/*.parquet')",
        "SELECT current_setting('s3_secret_access_key')",
    ]
    for sql in probes:
        response = a.post("/query", json={"sql": sql}, headers={"Accept": "application/json"})
        assert response.status_code in (400, 403), f"{sql}: {response.text}"
        assert password not in response.text
        assert env["ARROWPORT_TEST_S3_SECRET"] not in response.text
    for path in ("/metrics", "/ready", "/health", "/tables", "/openapi.json"):
        text = a.get(path).text
        assert password not in text, path
        assert env["ARROWPORT_TEST_S3_SECRET"] not in text, path


def test_the_lake_reports_its_files_and_snapshots_as_metrics(a: httpx.Client) -> None:
    assert post_binary(a, "counted", ipc_bytes(pa.table({"x": [1, 2, 3]}))).status_code == 200
    metrics = a.get("/metrics").text
    figures = {
        line.split()[0]: float(line.split()[1])
        for line in metrics.splitlines()
        if line.startswith("arrowport_lake_")
    }
    assert figures["arrowport_lake_snapshots"] >= 1
    assert "arrowport_lake_data_files" in figures
    assert figures["arrowport_lake_maintenance_runs_failed_total"] == 0


def test_a_node_with_a_store_it_cannot_reach_refuses_to_start(tmp_path: Path) -> None:
    config = lake_config()
    config["ducklake"]["s3_endpoint"] = "127.0.0.1:1"
    node = ArrowportProcess(tmp_path / "node", config=config)
    with pytest.raises(RuntimeError, match="exited during start-up"):
        node.start(timeout=120)
    log = "\n".join(node.lines)
    assert "data path" in log
    assert services()["ARROWPORT_TEST_S3_SECRET"] not in log


def sqlite_lake_config(tmp_path: Path) -> dict[str, Any]:
    """A lake on this machine alone: a SQLite catalog and local data files (no services)."""
    return {
        "storage": {"target": "ducklake"},
        "ducklake": {
            "catalog": f"sqlite:{tmp_path / 'catalog.sqlite'}",
            "data_path": str(tmp_path / "data"),
        },
    }


def test_one_machine_lake_with_a_sqlite_catalog_and_two_workers(tmp_path: Path) -> None:
    config = sqlite_lake_config(tmp_path)
    node = ArrowportProcess(tmp_path / "node", config=config, args=["--workers", "2"])
    node.start(timeout=90)
    try:
        rows = ipc_bytes(pa.table({"id": pa.array(range(100), pa.int64())}))
        answers = []
        for _ in range(4):  # new connections: the kernel spreads them over the workers
            with httpx.Client(base_url=node.url, timeout=60) as http:
                answers.append(
                    post_binary(http, "local", rows, headers={"Idempotency-Key": "once"}).json()
                )
        assert [answer["duplicate"] for answer in answers] == [False, True, True, True]
        with httpx.Client(base_url=node.url, timeout=60) as http:
            assert query(http, "SELECT count(*) AS n FROM local").to_pylist() == [{"n": 100}]
        assert list((tmp_path / "data").rglob("*.parquet"))
    finally:
        node.stop(60)


def test_workers_leave_start_up_warnings_to_their_supervisor(tmp_path: Path) -> None:
    config = sqlite_lake_config(tmp_path)
    args = ["--workers", "3", "--host", "0.0.0.0", "--allow-unauthenticated"]
    with ArrowportProcess(tmp_path / "node", config=config, args=args) as node:
        assert httpx.get(node.url + "/health", timeout=30).status_code == 200
        warnings = [line for line in node.lines if "AUTHENTICATION IS OFF" in line]
    assert len(warnings) == 1, node.lines


def test_concurrent_bulk_writes_to_one_lake_node_all_land(nodes: list[ArrowportProcess]) -> None:
    # Each 1M-row write holds Parquet row groups in DuckDB's buffer pool until its commit.
    rows = 1_000_000
    noise = np.random.default_rng(0)  # values that do not compress: full-size row groups
    table = pa.table(
        {"id": pa.array(range(rows), pa.int64())}
        | {f"v{i}": pa.array(noise.random(rows)) for i in range(4)}
    )
    body = ipc_bytes(table, batch_rows=122_880)
    answers: list[httpx.Response] = []

    def send() -> None:
        with httpx.Client(base_url=nodes[0].url, timeout=300) as http:
            answers.append(post_binary(http, "bulk", body))

    senders = [threading.Thread(target=send) for _ in range(3)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(300)
    assert [answer.status_code for answer in answers] == [200, 200, 200], [
        answer.text for answer in answers
    ]
    with httpx.Client(base_url=nodes[1].url, timeout=60) as http:
        assert query(http, "SELECT count(*) AS n FROM bulk").to_pylist() == [{"n": 3 * rows}]


def test_with_file_access_on_the_lake_own_files_stay_unreadable(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.sqlite"
    data = tmp_path / "data"
    config = {
        "storage": {"target": "ducklake"},
        "duckdb": {"allow_file_access": True},
        "ducklake": {"catalog": f"sqlite:{catalog}", "data_path": str(data)},
    }
    outside = tmp_path / "mine.csv"
    outside.write_text("a\n1\n")
    with (
        ArrowportProcess(tmp_path / "node", config=config) as node,
        httpx.Client(base_url=node.url, timeout=60) as http,
    ):
        keyed = ipc_bytes(pa.table({"id": pa.array([1], pa.int64())}))
        answer = post_binary(http, "own", keyed, headers={"Idempotency-Key": "k"})
        assert answer.status_code == 200, answer.text
        for sql in (
            f"SELECT * FROM read_parquet('{data}/**/*.parquet')",
            f"SELECT * FROM read_parquet('{data}/_arrowport/idempotency_keys/*.parquet')",
            f"SELECT * FROM read_blob('{catalog}')",
            f"SELECT * FROM read_blob('{data}/*')",
            f'SELECT (WITH "{data}/**/*.parquet" AS (SELECT 1) SELECT 1) x, * '
            f'FROM "{data}/**/*.parquet"',
        ):
            _assert_read_only(http, sql)
        assert query(http, f"SELECT a FROM read_csv('{outside}')").to_pylist() == [{"a": 1}]


def test_a_cte_name_out_of_its_scope_does_not_reach_the_lake_data_files(tmp_path: Path) -> None:
    data = tmp_path / "data"
    config = {
        "storage": {"target": "ducklake"},
        "ducklake": {"catalog": f"sqlite:{tmp_path / 'catalog.sqlite'}", "data_path": str(data)},
    }
    with (
        ArrowportProcess(tmp_path / "node", config=config) as node,
        httpx.Client(base_url=node.url, timeout=60) as http,
    ):
        for value in (111, 222):  # the replaced rows stay in the data files
            rows = ipc_bytes(pa.table({"a": pa.array([value] * 2000, pa.int64())}))
            answer = post_binary(http, "scoped", rows, params={"mode": "replace"})
            assert answer.status_code == 200, answer.text
        files = f'"{data}/**/*.parquet"'
        for sql in (
            f"SELECT (WITH {files} AS (SELECT 1) SELECT 1) x, a FROM {files}",  # another scope
            f"WITH {files} AS (SELECT * FROM {files}) SELECT * FROM {files}",  # its own body
            f"WITH b AS (SELECT * FROM {files}), {files} AS (SELECT 1) SELECT * FROM b",  # later
            f"WITH RECURSIVE {files} AS (SELECT * FROM {files} UNION ALL "  # recursive anchor
            f"SELECT * FROM {files} WHERE false) SELECT * FROM {files}",
            f"SUMMARIZE (WITH {files} AS (SELECT * FROM {files}) SELECT * FROM {files})",
            # A Kelvin sign is "k" to Python's lower() but not to DuckDB: another name.
            f'WITH "{data}/**/duc\u212alake-*.parquet" AS (SELECT 1) '
            f'SELECT * FROM "{data}/**/ducklake-*.parquet"',
        ):
            _assert_read_only(http, sql)
        assert query(http, "SELECT DISTINCT a FROM scoped").to_pylist() == [{"a": 222}]


def _assert_read_only(http: httpx.Client, sql: str) -> None:
    refused = http.post("/query", json={"sql": sql})
    assert refused.status_code == 403, f"{sql}: {refused.text}"
    assert refused.json()["code"] == "read_only"


def children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found |= {int(child) for child in (task / "children").read_text().split()}
    return found


def wait_for(condition: Callable[[], bool], seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


def test_a_killed_worker_is_replaced_and_workers_die_with_their_supervisor(
    tmp_path: Path,
) -> None:
    """...and the supervisor hands its workers their settings without writing them anywhere:
    no secret of them is on disk while they run, and nothing is left behind when it is killed."""
    secret = "s3-secret-never-on-disk"
    config = {
        "storage": {"target": "ducklake"},
        "ducklake": {
            "catalog": f"sqlite:{tmp_path / 'c.sqlite'}",
            "data_path": str(tmp_path),
            "s3_key_id": "key",
            "s3_secret": secret,
        },
    }
    temp = tmp_path / "temp"
    temp.mkdir()
    node = ArrowportProcess(
        tmp_path / "node", config=config, args=["--workers", "2"], env={"TMPDIR": str(temp)}
    )
    node.start(timeout=90)
    assert node.proc is not None
    supervisor = node.proc.pid
    try:
        first = children(supervisor)
        assert len(first) == 2
        assert not [f for f in temp.rglob("*") if f.is_file() and secret in f.read_text("latin-1")]
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        assert wait_for(lambda: len(children(supervisor) - {victim}) == 2)
        for _ in range(4):
            with httpx.Client(base_url=node.url, timeout=60) as http:
                assert http.get("/health").status_code == 200
        workers = children(supervisor)
    finally:
        node.kill()  # SIGKILL: the supervisor cannot pass anything on
    assert wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers))
    # Nothing left but DuckDB's extension directory, which the lake keeps on purpose.
    left = [p.name for p in temp.iterdir() if not p.name.startswith("arrowport-extensions-")]
    assert left == []
