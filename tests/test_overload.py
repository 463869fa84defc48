"""Limits and overload: too-large bodies, floods, slow clients and a drain on SIGTERM.

Raw sockets are used where a well-behaved client cannot misbehave on purpose (declaring a body it
never sends, stalling half-way).
"""

from __future__ import annotations

import base64
import contextlib
import json
import select
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pyarrow as pa
import pytest

from tests.conftest import ARROW_STREAM, ipc_bytes, query
from tests.server import ArrowportProcess

MIB = 1024**2


def ids_table(rows: int, offset: int = 0) -> pa.Table:
    ids = pa.array(range(offset, offset + rows), pa.int64())
    return pa.table({"id": ids, "twice": pa.array(range(2 * offset, 2 * (offset + rows), 2))})


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS line")


def row_count(client: httpx.Client, table: str) -> int:
    sql = f"SELECT count(*) AS n FROM information_schema.tables WHERE table_name = '{table}'"
    if query(client, sql).column("n")[0].as_py() == 0:
        return 0
    return int(query(client, f'SELECT count(*) AS n FROM "{table}"').column("n")[0].as_py())


# -- raw HTTP ------------------------------------------------------------------------------------


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.body)
        return document


def open_request(
    port: int,
    path: str,
    headers: dict[str, str],
    first_bytes: bytes = b"",
) -> socket.socket:
    """Send a request head (and the start of its body); the caller sends the rest, or not."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    sock.sendall(head.encode() + b"\r\n" + first_bytes)
    return sock


def read_response(sock: socket.socket, timeout: float = 60.0) -> RawResponse:
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed before a response: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return RawResponse(status, headers, body[:length])


def send_until_answered(sock: socket.socket, chunks: Iterator[bytes]) -> int:
    """Send ``chunks`` until the server answers or stops listening; returns the bytes sent."""
    sock.setblocking(False)
    sent = 0
    try:
        for chunk in chunks:
            view = memoryview(chunk)
            while view:
                readable, writable, _ = select.select([sock], [sock], [], 30)
                if readable:
                    return sent
                if not writable:
                    raise AssertionError("server neither read the body nor answered")
                try:
                    written = sock.send(view)
                except (BrokenPipeError, ConnectionResetError):
                    return sent
                view = view[written:]
                sent += written
        return sent
    finally:
        sock.setblocking(True)


def chunked(body: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    """``body`` in HTTP/1.1 chunked transfer encoding."""
    for start in range(0, len(body), size):
        piece = body[start : start + size]
        yield f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    yield b"0\r\n\r\n"


# -- too large -----------------------------------------------------------------------------------

LIMITED = {
    "limits": {
        "max_body_bytes": MIB,
        "max_json_body_bytes": MIB,
        "max_rows_per_request": 10_000,
    }
}


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArrowportProcess]:
    with ArrowportProcess(tmp_path_factory.mktemp("limited"), config=LIMITED) as process:
        yield process


@pytest.mark.parametrize("content_type", [ARROW_STREAM, "application/json"])
def test_declared_huge_body_is_refused_without_reading_it(
    limited: ArrowportProcess, content_type: str
) -> None:
    assert limited.proc is not None
    pid = limited.proc.pid
    before = rss_kib(pid)
    answers = []
    for _ in range(3):
        # A gigabyte is declared, one mebibyte is sent: the answer must not wait for the rest.
        sock = open_request(
            limited.port,
            "/stream/too_big",
            {"Content-Type": content_type, "Content-Length": str(1024**3)},
            b"\0" * MIB,
        )
        with sock:
            answers.append(read_response(sock, timeout=30))
    after = rss_kib(pid)
    for answer in answers:
        assert answer.status == 413, answer.body
        assert answer.json()["code"] == "payload_too_large"
    assert after - before < 64 * 1024, f"RSS grew from {before} KiB to {after} KiB"
    assert limited.healthy()


def test_chunked_body_over_the_limit_is_refused_while_reading(limited: ArrowportProcess) -> None:
    # No Content-Length: the limit can only be enforced while the body arrives. Each batch is
    # well under the limit; the whole stream (about 8 MiB) is not.
    body = ipc_bytes(ids_table(500_000), batch_rows=10_000)
    head = {"Content-Type": ARROW_STREAM, "Transfer-Encoding": "chunked"}
    sock = open_request(limited.port, "/stream/too_big_chunked", head)
    with sock:
        sent = send_until_answered(sock, chunked(body))
        answer = read_response(sock)
    assert answer.status == 413, answer.body
    assert answer.json()["code"] == "payload_too_large"
    assert sent < len(body)
    with httpx.Client(base_url=limited.url, timeout=30) as http:
        assert row_count(http, "too_big_chunked") == 0


def test_single_ipc_message_larger_than_the_limit_is_413(limited: ArrowportProcess) -> None:
    body = ipc_bytes(ids_table(200_000))  # one record batch of about 3 MiB, sent chunked
    with httpx.Client(base_url=limited.url, timeout=60) as http:
        response = http.post(
            "/stream/too_big_message",
            content=iter([body[i : i + 65536] for i in range(0, len(body), 65536)]),
            headers={"Content-Type": ARROW_STREAM},
        )
        assert response.status_code == 413, response.text
        assert response.json()["code"] == "payload_too_large"
        assert row_count(http, "too_big_message") == 0


def test_json_body_over_its_limit_is_413(limited: ArrowportProcess) -> None:
    data = base64.b64encode(ipc_bytes(ids_table(100_000))).decode()
    with httpx.Client(base_url=limited.url, timeout=60) as http:
        response = http.post("/stream/too_big_json", json={"config": {}, "batch": {"data": data}})
        assert response.status_code == 413, response.text
        assert response.json()["code"] == "payload_too_large"
        assert row_count(http, "too_big_json") == 0


def test_too_many_rows_is_413_and_nothing_lands(limited: ArrowportProcess) -> None:
    body = ipc_bytes(ids_table(10_001), batch_rows=1_000)
    with httpx.Client(base_url=limited.url, timeout=60) as http:
        response = http.post(
            "/stream/too_many_rows", content=body, headers={"Content-Type": ARROW_STREAM}
        )
        assert response.status_code == 413, response.text
        assert response.json()["code"] == "payload_too_large"
        assert row_count(http, "too_many_rows") == 0
        exact = http.post(
            "/stream/too_many_rows",
            content=ipc_bytes(ids_table(10_000), batch_rows=1_000),
            headers={"Content-Type": ARROW_STREAM},
        )
        assert exact.status_code == 200, exact.text
        assert row_count(http, "too_many_rows") == 10_000


# -- JSON bodies held in memory ------------------------------------------------------------------


def _json_read_whole(table: str, rows: int) -> bytes:
    """A seed JSON body that must be read whole: its ``config`` comes after ``batch.data``."""
    data = base64.b64encode(ipc_bytes(ids_table(rows))).decode()
    return json.dumps({"batch": {"data": data}, "config": {"target_table": table}}).encode()


@pytest.mark.parametrize("framing", ["content_length", "chunked"])
def test_json_bodies_read_whole_count_against_the_memory_budget_as_they_arrive(
    tmp_path: Path, framing: str
) -> None:
    """A JSON body read whole counts every byte it holds against ``limits.max_inflight_bytes``
    from the first, whether its length was declared or not: beside one that holds most of
    the budget, another is refused 503 before it is all in memory."""
    config = {"limits": {"max_inflight_bytes": 4 * MIB, "body_timeout_seconds": 60}}
    with ArrowportProcess(tmp_path, config=config) as server:
        first = _json_read_whole("held", 110_000)  # ~2.3 MiB, all but its end sent
        holder = open_request(
            server.port,
            "/stream/held",
            {"Content-Type": "application/json", "Content-Length": str(len(first))},
            first[:-100],
        )
        with holder:
            second = _json_read_whole("refused", 110_000)
            headers = {"Content-Type": "application/json"}
            if framing == "chunked":
                headers["Transfer-Encoding"] = "chunked"
                pieces = chunked(second)
            else:
                headers["Content-Length"] = str(len(second))
                pieces = iter([second[i : i + 65536] for i in range(0, len(second), 65536)])
            time.sleep(1.0)  # the first body's bytes are in by now
            with open_request(server.port, "/stream/refused", headers) as sock:
                send_until_answered(sock, pieces)
                answer = read_response(sock, timeout=30)
            assert answer.status == 503, answer.body
            assert answer.json()["code"] == "overloaded"
        with httpx.Client(base_url=server.url, timeout=30) as http:
            assert http.get("/tables/refused").status_code == 404
            landed = http.post(
                "/stream/after", content=second, headers={"Content-Type": "application/json"}
            )
            assert landed.status_code == 200, landed.text
            # Alone, a body may pass the budget; one streamed into DuckDB (config first) too.
            data = base64.b64encode(ipc_bytes(ids_table(110_000))).decode()
            streamed = json.dumps({"config": {"target_table": "streamed"}, "batch": {"data": data}})
            landed = http.post(
                "/stream/s", content=streamed, headers={"Content-Type": "application/json"}
            )
            assert landed.status_code == 200, landed.text
        assert server.healthy()


# -- flood ---------------------------------------------------------------------------------------

FLOOD = {
    "limits": {
        "small_body_bytes": 64 * 1024,
        "max_streaming_writes": 1,
        "max_queued_writes": 2,
        "max_inflight_bytes": 3 * MIB,
        "body_timeout_seconds": 300,
    }
}
SMALL_ROWS = 2_000  # about 32 KiB: the group writer
LARGE_ROWS = 100_000  # about 1.6 MiB: streamed


def test_flood_beyond_limits_sheds_load_and_loses_no_acknowledged_row(tmp_path: Path) -> None:
    acknowledged: dict[int, int] = {}  # request number -> rows
    refusals: list[httpx.Response] = []
    unexpected: list[str] = []
    lock = threading.Lock()

    def record(number: int, rows: int, response: httpx.Response) -> None:
        with lock:
            if response.status_code == 200:
                assert response.json()["rows_processed"] == rows
                acknowledged[number] = rows
            elif response.status_code == 503:
                refusals.append(response)
            else:
                unexpected.append(f"{response.status_code} {response.text}")

    def body_for(number: int, rows: int) -> bytes:
        return ipc_bytes(ids_table(rows, offset=number * 1_000_000))

    with (
        ArrowportProcess(tmp_path, config=FLOOD) as server,
        httpx.Client(base_url=server.url, timeout=120) as http,
    ):
        created = http.post(
            "/stream/flood",
            content=body_for(999_998, SMALL_ROWS),
            headers={"Content-Type": ARROW_STREAM},
        )
        record(999_998, SMALL_ROWS, created)
        # A large upload that stalls half-way holds the one streaming slot and 2.4 MiB of the
        # in-flight budget, so the next large request must be refused.
        stalled_body = body_for(0, 150_000)
        stalled = open_request(
            server.port,
            "/stream/flood",
            {"Content-Type": ARROW_STREAM, "Content-Length": str(len(stalled_body))},
            stalled_body[: len(stalled_body) // 2],
        )
        with stalled:
            number = 1
            deadline = time.monotonic() + 60
            while not refusals and time.monotonic() < deadline:
                response = http.post(
                    "/stream/flood",
                    content=body_for(number, LARGE_ROWS),
                    headers={"Content-Type": ARROW_STREAM},
                )
                record(number, LARGE_ROWS, response)
                number += 1
            assert refusals, "a second large upload was not refused while the first one stalled"

            def flood(worker: int) -> None:
                with httpx.Client(base_url=server.url, timeout=120) as client:
                    for i in range(8):
                        request = 1_000 + worker * 100 + i
                        rows = LARGE_ROWS if i % 4 == 3 else SMALL_ROWS
                        try:
                            response = client.post(
                                "/stream/flood",
                                content=body_for(request, rows),
                                headers={"Content-Type": ARROW_STREAM},
                            )
                        except httpx.TransportError as exc:
                            with lock:
                                unexpected.append(f"request {request}: {exc!r}")
                            continue
                        record(request, rows, response)

            workers = [threading.Thread(target=flood, args=(w,)) for w in range(12)]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join(300)
            stalled.sendall(stalled_body[len(stalled_body) // 2 :])
            finished = read_response(stalled)
            assert finished.status == 200, finished.body
            acknowledged[0] = 150_000

        assert unexpected == []
        for refusal in refusals:
            assert refusal.json()["code"] == "overloaded"
            assert int(refusal.headers["Retry-After"]) >= 1
        landed = query(
            http,
            "SELECT id // 1000000 AS request, count(*) AS n, count(DISTINCT id) AS d "
            "FROM flood GROUP BY request",
        ).to_pylist()
        assert {row["request"]: row["n"] for row in landed} == acknowledged
        assert all(row["n"] == row["d"] for row in landed)
        print(
            f"\nflood: {len(acknowledged)} requests acknowledged "
            f"({sum(acknowledged.values())} rows), {len(refusals)} refused with 503"
        )
        assert server.healthy()
        after = http.post(
            "/stream/flood",
            content=body_for(999_999, LARGE_ROWS),
            headers={"Content-Type": ARROW_STREAM},
        )
        assert after.status_code == 200, after.text


def test_stalled_upload_creating_a_table_does_not_stall_other_tables(tmp_path: Path) -> None:
    """A client that stalls while its upload creates a table must not hold up everyone else."""
    body = ipc_bytes(ids_table(150_000))
    config = {"limits": {"body_timeout_seconds": 300}}
    with ArrowportProcess(tmp_path, config=config) as server:
        stalled = open_request(
            server.port,
            "/stream/stalled_new_table",
            {"Content-Type": ARROW_STREAM, "Content-Length": str(len(body))},
            body[: len(body) // 2],
        )
        with stalled, httpx.Client(base_url=server.url, timeout=30) as http:
            waiting = threading.Thread(
                target=_post_quietly,
                args=(server.url + "/stream/stalled_new_table", ipc_bytes(ids_table(10))),
            )
            waiting.start()
            time.sleep(0.5)  # let the small write to the stalled table queue up first
            other = http.post(
                "/stream/independent",
                content=ipc_bytes(ids_table(10)),
                headers={"Content-Type": ARROW_STREAM},
            )
            assert other.status_code == 200, other.text
            stalled.sendall(body[len(body) // 2 :])
            assert read_response(stalled).status == 200
            waiting.join(60)
            assert row_count(http, "independent") == 10


def _post_quietly(url: str, body: bytes) -> None:
    with contextlib.suppress(httpx.HTTPError):
        httpx.post(url, content=body, headers={"Content-Type": ARROW_STREAM}, timeout=120)


# -- slow clients --------------------------------------------------------------------------------

SLOW = {"limits": {"body_timeout_seconds": 1}}


@pytest.fixture(scope="module")
def impatient(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArrowportProcess]:
    with ArrowportProcess(tmp_path_factory.mktemp("impatient"), config=SLOW) as process:
        yield process


def _json_document(rows: int) -> bytes:
    data = base64.b64encode(ipc_bytes(ids_table(rows))).decode()
    return json.dumps({"config": {}, "batch": {"data": data}}).encode()


@pytest.mark.parametrize(
    ("table", "content_type", "body"),
    [
        ("slow_streamed", ARROW_STREAM, ipc_bytes(ids_table(300_000))),
        ("slow_small", ARROW_STREAM, ipc_bytes(ids_table(1_000))),
        ("slow_json", "application/json", _json_document(1_000)),
    ],
    ids=["streamed", "small_binary", "json"],
)
@pytest.mark.parametrize("sent", [0.5, 0.0], ids=["half_sent", "none_sent"])
def test_stalled_body_times_out_with_408(
    impatient: ArrowportProcess, table: str, content_type: str, body: bytes, sent: float
) -> None:
    """A body that stops arriving, or never starts, is answered 408 once
    ``limits.body_timeout_seconds`` pass without data."""
    sock = open_request(
        impatient.port,
        f"/stream/{table}_{int(sent * 100)}",
        {"Content-Type": content_type, "Content-Length": str(len(body))},
        body[: int(len(body) * sent)],
    )
    with sock:
        answer = read_response(sock, timeout=30)
    assert answer.status == 408, answer.body
    assert answer.json()["code"] == "request_timeout"
    with httpx.Client(base_url=impatient.url, timeout=30) as http:
        assert row_count(http, f"{table}_{int(sent * 100)}") == 0
    assert impatient.healthy()


# -- SIGTERM -------------------------------------------------------------------------------------


def test_sigterm_drains_an_inflight_upload_and_refuses_new_writes(tmp_path: Path) -> None:
    rows = 500_000
    body = ipc_bytes(ids_table(rows))
    server = ArrowportProcess(tmp_path).start()
    try:
        upload = open_request(
            server.port,
            "/stream/drained",
            {"Content-Type": ARROW_STREAM, "Content-Length": str(len(body))},
            body[: len(body) // 2],
        )
        with upload, httpx.Client(base_url=server.url, timeout=30) as http:
            # The upload has been accepted (it holds a streaming writer) before the signal.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                metrics = http.get("/metrics").text
                if _gauge(metrics, "arrowport_requests_in_flight") >= 2:
                    break
                time.sleep(0.05)
            assert server.proc is not None
            server.proc.send_signal(signal.SIGTERM)
            late_answers: list[int | str] = []
            late_ok = 0
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    late = httpx.post(
                        server.url + "/stream/late",
                        content=ipc_bytes(ids_table(10)),
                        headers={"Content-Type": ARROW_STREAM},
                        timeout=10,
                    )
                except httpx.TransportError as exc:
                    late_answers.append(type(exc).__name__)
                    break
                late_answers.append(late.status_code)
                if late.status_code == 200:
                    late_ok += 1  # answered before the signal was handled: must be durable
                    continue
                assert late.status_code == 503, late.text
                assert late.json()["code"] == "shutting_down"
                assert "Retry-After" in late.headers
                break
            assert late_answers, "no request was tried during the drain"
            assert late_answers[-1] != 200, late_answers
            upload.sendall(body[len(body) // 2 :])
            finished = read_response(upload)
        assert finished.status == 200, finished.body
        assert finished.json()["rows_processed"] == rows
        assert server.wait_for_exit(60) == 0
    finally:
        server.kill()
    with duckdb.connect(str(server.db_path), read_only=True) as db:
        assert db.execute("SELECT count(*), count(DISTINCT id) FROM drained").fetchone() == (
            rows,
            rows,
        )
        tables = {
            name for (name,) in db.execute("SELECT table_name FROM duckdb_tables()").fetchall()
        }
        if late_ok:
            assert db.execute("SELECT count(*) FROM late").fetchone() == (10 * late_ok,)
        else:
            assert "late" not in tables


def _gauge(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"metric {name} not found")
