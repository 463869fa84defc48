"""Shutdown and restart: SIGTERM drains in-flight ingests, commits, checkpoints and exits 0."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import httpx
import pyarrow as pa
import pyarrow.flight as flight

from tests.conftest import ARROW_STREAM, in_flight, ipc_bytes
from tests.server import ArrowportProcess


def sample(rows: int, offset: int = 0) -> pa.Table:
    ids = list(range(offset, offset + rows))
    return pa.table({"id": pa.array(ids, pa.int64()), "label": [f"r{i}" for i in ids]})


def post(client: httpx.Client, stream: str, body: bytes | Iterator[bytes]) -> httpx.Response:
    return client.post(f"/stream/{stream}", content=body, headers={"Content-Type": ARROW_STREAM})


def stored_rows(db_path: Path, table: str) -> int:
    with duckdb.connect(str(db_path), read_only=True) as con:
        row = con.execute(f'SELECT count(*) FROM "{table}"').fetchone()
    assert row is not None
    return int(row[0])


def test_sigint_exits_zero(tmp_path: Path) -> None:
    server = ArrowportProcess(tmp_path).start()
    try:
        assert server.proc is not None
        server.proc.send_signal(signal.SIGINT)
        assert server.wait_for_exit(30) == 0
    finally:
        server.kill()


def test_sigterm_during_large_ingest_finishes_it(tmp_path: Path) -> None:
    server = ArrowportProcess(tmp_path).start()
    acknowledged = 0
    sent_first = threading.Event()
    resume = threading.Event()
    try:
        client = httpx.Client(base_url=server.url, timeout=60)
        for i in range(3):
            response = post(client, "drain", ipc_bytes(sample(10, offset=i * 10)))
            assert response.status_code == 200, response.text
            acknowledged += 10

        large_rows = 300_000
        body = ipc_bytes(sample(large_rows, offset=1_000_000), batch_rows=30_000)
        first_part = 1024**2
        result: list[httpx.Response | BaseException] = []

        def pieces() -> Iterator[bytes]:
            yield body[:first_part]
            sent_first.set()
            assert resume.wait(60)
            for start in range(first_part, len(body), 512 * 1024):
                yield body[start : start + 512 * 1024]

        def send_large() -> None:
            with httpx.Client(base_url=server.url, timeout=120) as own:
                try:
                    result.append(post(own, "drain", pieces()))
                except BaseException as exc:
                    result.append(exc)

        sender = threading.Thread(target=send_large)
        sender.start()
        assert sent_first.wait(30)
        deadline = time.monotonic() + 30
        while in_flight(client) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert in_flight(client) >= 2  # the large ingest and this scrape
        client.close()

        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        # New writes after the signal are refused (503) or cannot connect; none is acknowledged.
        late_acknowledged = 0
        for i in range(3):
            try:
                with httpx.Client(base_url=server.url, timeout=10) as late:
                    response = post(late, "drain", ipc_bytes(sample(1, offset=500_000 + i)))
            except httpx.HTTPError:
                continue
            assert response.status_code in (200, 503), response.text
            if response.status_code == 200:
                late_acknowledged += 1
        resume.set()
        sender.join(120)
        assert not sender.is_alive()
        assert len(result) == 1
        response = result[0]
        assert isinstance(response, httpx.Response), repr(response)
        assert response.status_code == 200, response.text
        assert response.json()["rows_processed"] == large_rows
        acknowledged += large_rows + late_acknowledged

        assert server.wait_for_exit(60) == 0
    finally:
        resume.set()
        server.kill()
    assert stored_rows(server.db_path, "drain") == acknowledged
    wal = Path(str(server.db_path) + ".wal")
    assert not wal.exists() or wal.stat().st_size == 0


def test_sigterm_during_a_flight_put_that_never_ends_exits_and_writes_nothing(
    tmp_path: Path,
) -> None:
    # A large put still arriving at shutdown: cancelled after limits.shutdown_timeout_seconds,
    # nothing of it written, and the server exits (no thread left waiting for its frames).
    config = {"limits": {"shutdown_timeout_seconds": 2}}
    server = ArrowportProcess(tmp_path, args=["--flight-port", "0"], config=config).start()
    stop = threading.Event()
    try:
        client = flight.connect(f"grpc://127.0.0.1:{server.ready['flight_port']}")
        batch = sample(200_000)  # each batch alone is past limits.small_body_bytes
        writer, _ = client.do_put(flight.FlightDescriptor.for_path("unfinished"), batch.schema)

        def send() -> None:
            with contextlib.suppress(pa.ArrowException):
                while not stop.is_set():  # as fast as the server takes them
                    writer.write_table(batch)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        time.sleep(1.5)
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        assert server.wait_for_exit(60) == 0
    finally:
        stop.set()
        server.kill()
    with duckdb.connect(str(server.db_path), read_only=True) as con:
        names = [row[0] for row in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()]
        rows = (
            con.execute("SELECT count(*) FROM unfinished").fetchone()
            if "unfinished" in names
            else (0,)
        )
    assert rows == (0,)


def test_one_shutdown_deadline_covers_flight_and_http(tmp_path: Path) -> None:
    """A stalled Flight put and a stalled HTTP upload at SIGTERM: the server is gone after
    about limits.shutdown_timeout_seconds, not that long for each protocol in turn."""
    config = {"limits": {"shutdown_timeout_seconds": 5, "body_timeout_seconds": 120}}
    server = ArrowportProcess(tmp_path, args=["--flight-port", "0"], config=config).start()
    try:
        client = flight.connect(f"grpc://127.0.0.1:{server.ready['flight_port']}")
        writer, _ = client.do_put(flight.FlightDescriptor.for_path("f"), sample(1).schema)
        writer.write_table(sample(1))  # and then nothing more
        body = ipc_bytes(sample(300_000))
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as upload:
            upload.sendall(
                b"POST /stream/h HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: " + ARROW_STREAM.encode() + b"\r\n"
                b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body[: len(body) // 2]
            )
            with httpx.Client(base_url=server.url, timeout=30) as http:
                deadline = time.monotonic() + 30
                while in_flight(http) < 2 and time.monotonic() < deadline:  # the upload, this
                    time.sleep(0.05)
            assert server.proc is not None
            started = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            assert server.wait_for_exit(60) == 0
            # Twice the timeout is what waiting for each side in turn takes.
            assert time.monotonic() - started < 8
    finally:
        server.kill()


def test_sigterm_idle_then_restart_on_same_file(tmp_path: Path) -> None:
    db_path = tmp_path / "kept.duckdb"
    with ArrowportProcess(tmp_path / "first", db_path=db_path) as first:
        with httpx.Client(base_url=first.url) as client:
            assert post(client, "kept", ipc_bytes(sample(40))).status_code == 200
            big = ipc_bytes(sample(150_000, offset=40), batch_rows=50_000)
            assert post(client, "kept", big).status_code == 200
        assert first.stop() == 0
    assert stored_rows(db_path, "kept") == 150_040

    with ArrowportProcess(tmp_path / "second", db_path=db_path) as second:
        with httpx.Client(base_url=second.url) as client:
            assert client.get("/tables/kept").json()["row_count"] == 150_040
            assert post(client, "kept", ipc_bytes(sample(2, offset=10**7))).status_code == 200
            assert client.get("/tables/kept").json()["row_count"] == 150_042
        assert second.stop() == 0  # SIGTERM while idle
    assert not any("Traceback" in line for line in first.lines + second.lines)
    assert stored_rows(db_path, "kept") == 150_042
    with duckdb.connect(str(db_path), read_only=True) as con:
        assert con.execute("SELECT max(id) FROM kept").fetchone() == (10**7 + 1,)


def test_a_hang_up_drains_as_sigterm_does(tmp_path: Path) -> None:
    """SIGHUP (the terminal closed, a service manager's reload) drains and exits 0: it had
    killed the process on the spot."""
    db_path = tmp_path / "hup.duckdb"
    with ArrowportProcess(tmp_path / "server", db_path=db_path) as server:
        with httpx.Client(base_url=server.url) as client:
            assert post(client, "hup", ipc_bytes(sample(25))).status_code == 200
        assert server.proc is not None
        server.proc.send_signal(signal.SIGHUP)
        assert server.wait_for_exit(60) == 0
    assert any("arrowport stopped" in line for line in server.lines)
    assert stored_rows(db_path, "hup") == 25
    assert not db_path.with_name("hup.duckdb.wal").exists()  # checkpointed as it closed


def test_a_native_crash_leaves_every_threads_stack_in_the_log(tmp_path: Path) -> None:
    """A crash in native code (DuckDB, an extension) cannot be caught; the log then shows what
    each thread was doing: the group writer's thread among them."""
    server = ArrowportProcess(tmp_path).start()
    try:
        assert server.proc is not None
        server.proc.send_signal(signal.SIGSEGV)
        assert server.wait_for_exit() == -signal.SIGSEGV
        time.sleep(0.2)  # the drain thread reads the last lines
        log = "\n".join(server.lines)
        assert "Fatal Python error: Segmentation fault" in log
        assert "arrowport/storage/group_writer.py" in log
    finally:
        server.kill()


def test_a_taken_http_port_stops_start_up_with_one_clear_line(tmp_path: Path) -> None:
    """As for a taken Flight port: one ``arrowport:`` line and exit 1 (it was uvicorn's own log
    line, and the database was left unclosed)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        server = ArrowportProcess(tmp_path, args=["--port", str(port)])
        with contextlib.suppress(RuntimeError):  # "exited during start-up"
            server.start()
        assert server.wait_for_exit() == 1
    reasons = [line for line in server.lines if line.startswith("arrowport: ")]
    assert reasons == [f"arrowport: cannot serve HTTP on 127.0.0.1:{port}: Address already in use"]
    assert not [line for line in server.lines if "Traceback" in line]


def test_the_ready_and_stopped_lines_are_written_at_any_log_level(tmp_path: Path) -> None:
    """At `logging.level: warning` or `error` the `arrowport ready` line, the one that says
    which ports `--port 0` picked, was filtered out with the access lines."""
    server = ArrowportProcess(tmp_path, env={"ARROWPORT_LOGGING_LEVEL": "error"})
    try:
        server.start()
        assert server.healthy()
        assert server.stop() == 0
    finally:
        server.kill()
    events = [json.loads(line)["event"] for line in server.lines]
    assert events == ["arrowport ready", "arrowport stopped"]


def test_sigterm_stops_a_query_still_running_at_the_shutdown_deadline(tmp_path: Path) -> None:
    """The database's close waited for the query: the server stopped only once the query
    ended by itself, up to limits.query_timeout_seconds later (a service manager kills it
    first)."""
    env = {
        "ARROWPORT_LIMITS_SHUTDOWN_TIMEOUT_SECONDS": "2",
        "ARROWPORT_LIMITS_QUERY_TIMEOUT_SECONDS": "120",
        "ARROWPORT_DUCKDB_THREADS": "1",
    }
    server = ArrowportProcess(tmp_path, env=env).start()
    endless = "SELECT count(*) FROM range(100000000000) t(x) WHERE x % 7 = 3"
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:

            def run_query() -> None:
                with contextlib.suppress(httpx.HTTPError):  # cut off at the deadline
                    client.post("/query", json={"sql": endless})

            threading.Thread(target=run_query, daemon=True).start()
            time.sleep(1.0)  # running in DuckDB by now
            assert server.proc is not None
            server.proc.send_signal(signal.SIGTERM)
            assert server.wait_for_exit(20) == 0
    finally:
        server.kill()
