"""Shared fixtures: a real server per module, or a fresh one per test when state matters."""

from __future__ import annotations

import base64
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pytest

from arrowport.config import DuckDBSettings
from arrowport.storage.database import Database
from tests.lake import OwnCatalog, lake_config
from tests.server import ArrowportProcess

ARROW_STREAM = "application/vnd.apache.arrow.stream"
# One query at a time and none waiting, with time enough for ENDLESS_QUERY to hold that turn.
ONE_QUERY_TURN = {
    "limits": {"max_concurrent_queries": 1, "max_queued_queries": 0, "query_timeout_seconds": 120}
}
# Minutes of DuckDB's time on any machine.
ENDLESS_QUERY = "SELECT sum(hash(range)) AS s FROM range(10000000000)"


def ipc_bytes(table: pa.Table, batch_rows: int | None = None) -> bytes:
    """Serialize ``table`` as a complete Arrow IPC stream (with its end-of-stream marker)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=batch_rows)
    return sink.getvalue().to_pybytes()


def mixed_batches(count: int, rows: int) -> list[pa.RecordBatch]:
    """``count`` batches of ``rows`` rows each: ``k`` numbers the rows in order, ``d`` is
    dictionary-encoded with a dictionary of its own in every batch, and ``l``, ``s`` and ``m``
    are a list, a struct and a map."""
    batches = []
    for number in range(count):
        keys = pa.array(range(number * rows, (number + 1) * rows), pa.int64())
        words = pa.array([f"w{number}_{i}" for i in range(3)])
        positions = pa.array([i % 3 for i in range(rows)], pa.int32())
        batches.append(
            pa.record_batch(
                {
                    "k": keys,
                    "d": pa.DictionaryArray.from_arrays(positions, words),
                    "l": pa.array([[i, number] for i in range(rows)], pa.list_(pa.int32())),
                    "s": pa.array(
                        [{"x": number, "y": f"r{i}"} for i in range(rows)],
                        pa.struct([("x", pa.int32()), ("y", pa.string())]),
                    ),
                    "m": pa.array(
                        [[(f"b{number}", i)] for i in range(rows)],
                        pa.map_(pa.string(), pa.int64()),
                    ),
                }
            )
        )
    return batches


def batches_ipc(batches: list[pa.RecordBatch]) -> bytes:
    """An IPC stream of ``batches`` as they are (a dictionary that changes is replaced)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batches[0].schema) as writer:
        for batch in batches:
            writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def stored_order(target: str, key: str = "k") -> str:
    """How to read rows back in the order they were stored: a DuckDB file keeps a request's rows
    in order (``rowid``); a lake numbers them by data file, which parallel writers finish in any
    order, so there the rows are sorted by ``key`` instead."""
    return "rowid" if target == "duckdb" else key


def stored_rows(client: httpx.Client, table: str, target: str = "duckdb") -> list[dict[str, Any]]:
    """Every row of ``table`` in the order it was stored (see :func:`stored_order`)."""
    order = stored_order(target)
    result: list[dict[str, Any]] = query(
        client, f'SELECT * FROM "{table}" ORDER BY {order}'
    ).to_pylist()
    return result


def post_binary(
    client: httpx.Client,
    stream: str,
    body: bytes | Iterator[bytes],
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """POST a raw Arrow IPC body to ``/stream/{stream}``."""
    return client.post(
        f"/stream/{stream}",
        content=body,
        params=params,
        headers={"Content-Type": ARROW_STREAM} | (headers or {}),
    )


def post_json(
    client: httpx.Client,
    stream: str,
    data: bytes,
    config: dict[str, object] | None = None,
    schema: pa.Schema | None = None,
) -> httpx.Response:
    """POST an IPC stream in the seed's JSON/base64 format."""
    batch = {"data": base64.b64encode(data).decode()}
    if schema is not None:
        batch["arrow_schema"] = base64.b64encode(schema.serialize().to_pybytes()).decode()
    return client.post(f"/stream/{stream}", json={"config": config or {}, "batch": batch})


def query(client: httpx.Client, sql: str) -> pa.Table:
    """Run a read-only query through the server and decode the Arrow IPC answer."""
    response = client.post("/query", json={"sql": sql})
    assert response.status_code == 200, response.text
    return pa.ipc.open_stream(response.content).read_all()


def table_rows(client: httpx.Client, table: str, order: str = "k") -> list[dict[str, Any]]:
    """Every row of ``table`` through the server, ordered by ``order``."""
    result: list[dict[str, Any]] = query(
        client, f'SELECT * FROM "{table}" ORDER BY {order}'
    ).to_pylist()
    return result


_STATUS = re.compile(r"^(?:Unknown: )?(?:Flight|gRPC) returned (.+?) error, with message: ", re.S)
_DEBUG_CONTEXT = re.compile(r"\. gRPC client debug context: ([A-Z_]+):")
# pyarrow's words for the gRPC status codes, where it puts them in the message instead.
_STATUS_WORDS = {
    "invalid argument": "INVALID_ARGUMENT",
    "not found": "NOT_FOUND",
    "already exists": "ALREADY_EXISTS",
    "resource exhausted": "RESOURCE_EXHAUSTED",
    "precondition failed": "FAILED_PRECONDITION",
    "aborted": "ABORTED",
    "timeout": "DEADLINE_EXCEEDED",
    "unavailable": "UNAVAILABLE",
    "unauthenticated": "UNAUTHENTICATED",
    "unauthorized": "PERMISSION_DENIED",
    "internal": "INTERNAL",
    "unimplemented": "UNIMPLEMENTED",
    "cancelled": "CANCELLED",
}


def grpc_error(error: BaseException) -> tuple[str, str]:
    """The gRPC status code (``INVALID_ARGUMENT``) and the server's message of an error raised
    by a pyarrow Flight client (whose exception classes lump several codes together)."""
    text = str(error)
    debug = _DEBUG_CONTEXT.search(text)
    if debug is not None:
        text, code = text[: debug.start()], debug[1]
    status = _STATUS.match(text)
    if status is not None:
        return _STATUS_WORDS[status[1]], text[status.end() :]
    assert debug is not None, f"no gRPC status in {str(error)!r}"
    return code, text


def metric(client: httpx.Client, name: str) -> float:
    """The value of the server's unlabelled metric ``name`` (a counter's with ``_total``)."""
    text = client.get("/metrics").text
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert match is not None, f"no {name} in /metrics"
    return float(match.group(1))


def in_flight(client: httpx.Client) -> float:
    """The server's ``arrowport_requests_in_flight`` gauge (this scrape counts itself)."""
    return metric(client, "arrowport_requests_in_flight")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed test's report shows the last log lines of each server it used: an answer of
    500 ``internal_error`` says only that the server log has the details."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.when != "call" or not report.failed:
        return
    for name, value in getattr(item, "funcargs", {}).items():
        if isinstance(value, ArrowportProcess) and value.lines:
            report.sections.append((f"arrowport log ({name})", "\n".join(value.lines[-60:])))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Modules that set ``ON_LAKE = True`` run their ``server`` tests on both storage targets."""
    if "target" in metafunc.fixturenames and getattr(metafunc.module, "ON_LAKE", False):
        metafunc.parametrize("target", ["duckdb", "ducklake"], indirect=True, scope="module")


@pytest.fixture
def own_catalog(tmp_path: Path) -> Iterator[OwnCatalog]:
    """A PostgreSQL of the test's own for a lake catalog that the test stops or freezes."""
    catalog = OwnCatalog(tmp_path / "services")
    try:
        yield catalog
    finally:
        catalog.stop()


@pytest.fixture(scope="module")
def target(request: pytest.FixtureRequest) -> str:
    """The storage target of the module's ``server``: the DuckDB file unless parametrized."""
    return str(getattr(request, "param", "duckdb"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, target: str) -> Iterator[ArrowportProcess]:
    config = lake_config() if target == "ducklake" else None
    with ArrowportProcess(tmp_path_factory.mktemp("server"), config=config) as process:
        yield process


@pytest.fixture
def client(server: ArrowportProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as http:
        yield http


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[ArrowportProcess]:
    with ArrowportProcess(tmp_path / "server") as process:
        yield process


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    """The storage layer in this process, on a fresh database file."""
    database = Database(DuckDBSettings(path=str(tmp_path / "unit.duckdb")))
    try:
        yield database
    finally:
        database.close()


def closed_by_server(sock: socket.socket, within: float) -> bool:
    """Whether the server closes ``sock`` within ``within`` seconds."""
    sock.settimeout(within)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return False
    except OSError:
        return True
    return True
