"""Exactly-once delivery over HTTP: ``Idempotency-Key`` and producer offsets.

Every test checks what landed by reading the table back, not only what the server answered.
"""

from __future__ import annotations

import base64
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from tests.conftest import ARROW_STREAM, ipc_bytes, query
from tests.server import ArrowportProcess

ON_LAKE = True  # every test on the module's server runs on the DuckDB file and on a DuckLake

LARGE_ROWS = 500_000  # about 8 MB of IPC: well above small_body_bytes, so the body streams


def batch(rows: int, offset: int = 0) -> pa.Table:
    ids = pa.array(range(offset, offset + rows), pa.int64())
    return pa.table({"id": ids, "value": pc.multiply(ids, 2).cast(pa.float64())})


def post_binary(
    client: httpx.Client,
    stream: str,
    body: bytes,
    key: str | None = None,
    params: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    sent = {"Content-Type": ARROW_STREAM} | (headers or {})
    if key is not None:
        sent["Idempotency-Key"] = key
    return client.post(f"/stream/{stream}", content=body, params=params, headers=sent)


def post_json(
    client: httpx.Client,
    stream: str,
    body: bytes,
    key: str | None = None,
    params: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
) -> httpx.Response:
    document = {"config": config or {}, "batch": {"data": base64.b64encode(body).decode()}}
    headers = {"Idempotency-Key": key} if key is not None else {}
    return client.post(f"/stream/{stream}", json=document, params=params, headers=headers)


def ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["status"] == "success"
    return body


def count(client: httpx.Client, table: str) -> int:
    exists = query(
        client, f"SELECT count(*) AS n FROM information_schema.tables WHERE table_name = '{table}'"
    )
    if exists.column("n")[0].as_py() == 0:
        return 0
    return int(query(client, f'SELECT count(*) AS n FROM "{table}"').column("n")[0].as_py())


def distinct_ids(client: httpx.Client, table: str) -> int:
    sql = f'SELECT count(DISTINCT id) AS n FROM "{table}"'
    return int(query(client, sql).column("n")[0].as_py())


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def wait_for_rows(client: httpx.Client, table: str, rows: int, timeout: float = 60.0) -> int:
    """Poll until ``table`` holds ``rows`` rows (or the deadline passes); returns the last count."""
    deadline = time.monotonic() + timeout
    seen = count(client, table)
    while seen < rows and time.monotonic() < deadline:
        time.sleep(0.05)
        seen = count(client, table)
    return seen


# -- idempotency keys ----------------------------------------------------------------------------


@pytest.mark.parametrize("body_format", ["binary", "json"])
def test_same_key_twice_lands_once(client: httpx.Client, body_format: str) -> None:
    stream = unique_name(f"idem_{body_format}")
    payload = ipc_bytes(batch(100))
    post = post_binary if body_format == "binary" else post_json
    first = ok(post(client, stream, payload, key="order-1"))
    second = ok(post(client, stream, payload, key="order-1"))
    assert first["duplicate"] is False
    assert second["duplicate"] is True
    assert second["rows_processed"] == first["rows_processed"] == 100
    assert count(client, stream) == 100


def test_key_is_shared_by_both_body_formats(client: httpx.Client) -> None:
    stream = unique_name("idem_formats")
    payload = ipc_bytes(batch(10))
    assert ok(post_binary(client, stream, payload, key="k"))["duplicate"] is False
    assert ok(post_json(client, stream, payload, key="k"))["duplicate"] is True
    assert count(client, stream) == 10


def test_large_streamed_body_retried_lands_once(client: httpx.Client) -> None:
    stream = unique_name("idem_large")
    payload = ipc_bytes(batch(LARGE_ROWS))
    assert len(payload) > 1024**2
    first = ok(post_binary(client, stream, payload, key="big"))
    second = ok(post_binary(client, stream, payload, key="big"))
    assert (first["duplicate"], second["duplicate"]) == (False, True)
    assert second["rows_processed"] == LARGE_ROWS
    assert count(client, stream) == LARGE_ROWS


def test_keys_are_per_stream(client: httpx.Client) -> None:
    a, b = unique_name("idem_a"), unique_name("idem_b")
    payload = ipc_bytes(batch(7))
    assert ok(post_binary(client, a, payload, key="same"))["duplicate"] is False
    assert ok(post_binary(client, b, payload, key="same"))["duplicate"] is False
    assert (count(client, a), count(client, b)) == (7, 7)


def test_requests_without_key_are_not_deduplicated(client: httpx.Client) -> None:
    stream = unique_name("idem_none")
    payload = ipc_bytes(batch(5))
    for _ in range(2):
        assert ok(post_binary(client, stream, payload))["duplicate"] is False
    assert count(client, stream) == 10


@pytest.mark.parametrize("rows", [1_000, LARGE_ROWS], ids=["group_writer", "streamed"])
def test_concurrent_identical_requests_land_once(server: ArrowportProcess, rows: int) -> None:
    stream = unique_name("idem_race")
    payload = ipc_bytes(batch(rows))
    senders = 8
    barrier = threading.Barrier(senders)
    answers: list[httpx.Response | BaseException] = []
    lock = threading.Lock()

    def send() -> None:
        with httpx.Client(base_url=server.url, timeout=120) as http:
            barrier.wait()
            try:
                answer: httpx.Response | BaseException = post_binary(
                    http, stream, payload, key="race"
                )
            except httpx.HTTPError as exc:
                answer = exc
            with lock:
                answers.append(answer)

    threads = [threading.Thread(target=send) for _ in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(180)
    assert len(answers) == senders
    for answer in answers:
        assert isinstance(answer, httpx.Response), answer
    # Concurrent streamed writes beyond max_streaming_writes may be refused (503); the default
    # limit is 8, so every request here gets through.
    bodies = [ok(answer) for answer in answers if isinstance(answer, httpx.Response)]
    assert sorted(body["duplicate"] for body in bodies) == [False] + [True] * (senders - 1)
    assert {body["rows_processed"] for body in bodies} == {rows}
    with httpx.Client(base_url=server.url, timeout=60) as http:
        assert count(http, stream) == rows
        assert distinct_ids(http, stream) == rows


@pytest.mark.parametrize("body_format", ["binary", "json"])
def test_same_key_different_payload_is_a_conflict(client: httpx.Client, body_format: str) -> None:
    stream = unique_name("idem_conflict")
    post = post_binary if body_format == "binary" else post_json
    ok(post(client, stream, ipc_bytes(batch(10)), key="k1"))
    response = post(client, stream, ipc_bytes(batch(10, offset=1)), key="k1")
    assert response.status_code == 409, response.text
    body = response.json()
    assert body["status"] == "error"
    assert body["code"] == "idempotency_conflict"
    assert count(client, stream) == 10
    assert query(client, f'SELECT min(id) AS m FROM "{stream}"').column("m")[0].as_py() == 0


def test_same_key_other_table_or_mode_is_a_conflict(client: httpx.Client) -> None:
    stream = unique_name("idem_target")
    other = unique_name("idem_other")
    payload = ipc_bytes(batch(4))
    ok(post_binary(client, stream, payload, key="k"))
    moved = post_binary(client, stream, payload, key="k", params={"table": other})
    assert moved.status_code == 409, moved.text
    assert moved.json()["code"] == "idempotency_conflict"
    replaced = post_binary(client, stream, payload, key="k", params={"mode": "replace"})
    assert replaced.status_code == 409, replaced.text
    assert replaced.json()["code"] == "idempotency_conflict"
    assert count(client, stream) == 4
    assert count(client, other) == 0


@pytest.mark.parametrize("key", ["", "x" * 257])
def test_invalid_key_is_refused(client: httpx.Client, key: str) -> None:
    stream = unique_name("idem_badkey")
    response = post_binary(client, stream, ipc_bytes(batch(3)), key=key)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "invalid_options"
    assert count(client, stream) == 0


# -- lost responses ------------------------------------------------------------------------------


def test_response_lost_after_commit_then_retry_is_a_duplicate(
    client: httpx.Client, server: ArrowportProcess
) -> None:
    """The client sends everything, the server commits, the answer never arrives."""
    stream = unique_name("lost_reply")
    payload = ipc_bytes(batch(LARGE_ROWS))
    assert len(payload) > 1024**2
    head = (
        f"POST /stream/{stream} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: {ARROW_STREAM}\r\nIdempotency-Key: lost-1\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as raw:
        raw.sendall(head + payload)
        # The server has the whole body and commits; this client never reads the reply.
        assert wait_for_rows(client, stream, LARGE_ROWS) == LARGE_ROWS
    retry = ok(post_binary(client, stream, payload, key="lost-1"))
    assert retry["duplicate"] is True
    assert retry["rows_processed"] == LARGE_ROWS
    assert count(client, stream) == LARGE_ROWS


def test_retry_while_first_attempt_still_writing_lands_once(
    client: httpx.Client, server: ArrowportProcess
) -> None:
    """A client that times out and retries at once races its own first attempt."""
    stream = unique_name("lost_race")
    payload = ipc_bytes(batch(LARGE_ROWS))
    impatient = httpx.Timeout(120, read=0.01)
    with (
        httpx.Client(base_url=server.url, timeout=impatient) as hasty,
        pytest.raises(httpx.ReadTimeout),
    ):
        post_binary(hasty, stream, payload, key="lost-2")
    retry = ok(post_binary(client, stream, payload, key="lost-2"))
    assert retry["rows_processed"] == LARGE_ROWS
    # Whichever attempt wrote, the rows are there once; give a slow first attempt time to finish.
    time.sleep(0.5)
    assert wait_for_rows(client, stream, LARGE_ROWS) == LARGE_ROWS
    assert count(client, stream) == LARGE_ROWS
    again = ok(post_binary(client, stream, payload, key="lost-2"))
    assert again["duplicate"] is True
    assert count(client, stream) == LARGE_ROWS


# -- producer offsets ----------------------------------------------------------------------------


def producer_state(client: httpx.Client, stream: str, producer: str) -> dict[str, Any]:
    response = client.get(f"/streams/{stream}/producers/{producer}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def send_seq(
    client: httpx.Client, stream: str, producer: str, sequence: int, rows: int = 10
) -> httpx.Response:
    payload = ipc_bytes(batch(rows, offset=sequence * rows))
    params = {"producer_id": producer, "sequence": sequence}
    return post_binary(client, stream, payload, params=params)


def test_unknown_producer_has_no_offset(client: httpx.Client) -> None:
    stream = unique_name("offsets_unknown")
    assert producer_state(client, stream, "nobody") == {
        "stream": stream,
        "producer_id": "nobody",
        "last_sequence": None,
        "next_sequence": None,
    }


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/streams/%FF/producers/p", 400, "invalid_name"),
        ("/streams/bad%20name/producers/p", 400, "invalid_name"),
        (f"/streams/ok/producers/{'p' * 257}", 422, "invalid_options"),
    ],
    ids=["not_utf8", "not_a_stream_name", "producer_too_long"],
)
def test_a_producer_no_request_could_name_is_refused(
    client: httpx.Client, path: str, status: int, code: str
) -> None:
    """Asked as an ingest would name them: a stream name or producer id that no ingest could
    carry is refused, not answered as a producer with no offset."""
    answer = client.get(path)
    assert answer.status_code == status, answer.text
    assert answer.json()["code"] == code


def test_offsets_in_order_then_duplicates_then_gap(client: httpx.Client) -> None:
    stream = unique_name("offsets")
    # The first sequence may be any number.
    for sequence in (5, 6, 7):
        body = ok(send_seq(client, stream, "p1", sequence))
        assert body["duplicate"] is False
        assert (body["producer_id"], body["sequence"]) == ("p1", sequence)
    assert producer_state(client, stream, "p1") == {
        "stream": stream,
        "producer_id": "p1",
        "last_sequence": 7,
        "next_sequence": 8,
    }
    for old in (5, 7, 0):
        assert ok(send_seq(client, stream, "p1", old))["duplicate"] is True
    gap = send_seq(client, stream, "p1", 10)
    assert gap.status_code == 409, gap.text
    error = gap.json()
    assert error["code"] == "sequence_gap"
    assert error["expected_sequence"] == 8
    assert producer_state(client, stream, "p1")["next_sequence"] == 8
    assert ok(send_seq(client, stream, "p1", 8))["duplicate"] is False
    assert count(client, stream) == 40
    assert distinct_ids(client, stream) == 40
    found = query(client, f'SELECT min(id) AS lo, max(id) AS hi FROM "{stream}"').to_pylist()
    assert found == [{"lo": 50, "hi": 89}]


def test_offsets_by_headers_and_json_body(client: httpx.Client) -> None:
    stream = unique_name("offsets_headers")
    headers = {"X-Arrowport-Producer-Id": "h", "X-Arrowport-Sequence": "0"}
    assert ok(post_binary(client, stream, ipc_bytes(batch(3)), headers=headers))["sequence"] == 0
    again = post_binary(client, stream, ipc_bytes(batch(3)), headers=headers)
    assert ok(again)["duplicate"] is True
    params = {"producer_id": "h", "sequence": 1}
    assert ok(post_json(client, stream, ipc_bytes(batch(3, 3)), params=params))["sequence"] == 1
    assert ok(post_json(client, stream, ipc_bytes(batch(3, 3)), params=params))["duplicate"]
    assert producer_state(client, stream, "h")["last_sequence"] == 1
    assert count(client, stream) == 6


def test_offsets_are_per_stream_and_per_producer(client: httpx.Client) -> None:
    a, b = unique_name("offsets_a"), unique_name("offsets_b")
    for sequence in range(3):
        ok(send_seq(client, a, "p", sequence))
    ok(send_seq(client, b, "p", 100))
    ok(send_seq(client, a, "q", 50))
    assert producer_state(client, a, "p")["last_sequence"] == 2
    assert producer_state(client, b, "p")["last_sequence"] == 100
    assert producer_state(client, a, "q")["last_sequence"] == 50
    # Stream b's offset does not make stream a's next sequence a gap, nor the reverse.
    assert ok(send_seq(client, a, "p", 3))["duplicate"] is False
    assert ok(send_seq(client, b, "p", 101))["duplicate"] is False
    assert (count(client, a), count(client, b)) == (50, 20)


@pytest.mark.parametrize(
    "params",
    [
        {"producer_id": "solo"},
        {"sequence": 3},
        {"producer_id": "p", "sequence": -1},
        # BIGINT's largest: the sequence after it could never be sent.
        {"producer_id": "p", "sequence": 2**63 - 1},
        {"producer_id": "p", "sequence": 10**30},
    ],
    ids=["id_only", "sequence_only", "negative", "int64_max", "past_int64"],
)
def test_incomplete_or_invalid_offset_is_refused(
    client: httpx.Client, params: dict[str, Any]
) -> None:
    stream = unique_name("offsets_bad")
    response = post_binary(client, stream, ipc_bytes(batch(3)), params=params)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "invalid_options"
    assert count(client, stream) == 0


def test_the_largest_sequence_lands_and_the_next_is_the_last_one(client: httpx.Client) -> None:
    stream = unique_name("offsets_top")
    ok(send_seq(client, stream, "top", 2**63 - 2, rows=1))
    assert producer_state(client, stream, "top")["next_sequence"] == 2**63 - 1


def test_concurrent_same_sequence_lands_once(server: ArrowportProcess) -> None:
    stream = unique_name("offsets_race")
    senders = 8
    barrier = threading.Barrier(senders)
    bodies: list[dict[str, Any]] = []
    lock = threading.Lock()

    def send() -> None:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            barrier.wait()
            body = ok(send_seq(http, stream, "racer", 0, rows=500))
            with lock:
                bodies.append(body)

    threads = [threading.Thread(target=send) for _ in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert sorted(body["duplicate"] for body in bodies) == [False] + [True] * (senders - 1)
    with httpx.Client(base_url=server.url, timeout=60) as http:
        assert count(http, stream) == 500


def test_key_and_offset_together(client: httpx.Client) -> None:
    stream = unique_name("both")
    payload = ipc_bytes(batch(5))
    params = {"producer_id": "kp", "sequence": 0}
    assert ok(post_binary(client, stream, payload, key="kk", params=params))["duplicate"] is False
    assert ok(post_binary(client, stream, payload, key="kk", params=params))["duplicate"] is True
    assert count(client, stream) == 5


def test_a_used_key_with_a_new_sequence_is_a_conflict(client: httpx.Client) -> None:
    # Answering it as a duplicate would leave sequence 1 unrecorded, and sequence 2 a gap.
    stream = unique_name("key_new_seq")
    payload = ipc_bytes(batch(5))
    first = {"producer_id": "kp", "sequence": 0}
    assert ok(post_binary(client, stream, payload, key="kk", params=first))["duplicate"] is False
    again = post_binary(client, stream, payload, key="kk", params={**first, "sequence": 1})
    assert again.status_code == 409, again.text
    assert again.json()["code"] == "idempotency_conflict"
    assert "sequence 1" in again.json()["message"]
    assert producer_state(client, stream, "kp")["next_sequence"] == 1
    later = ipc_bytes(batch(5, 5))
    assert ok(post_binary(client, stream, later, key="k2", params={**first, "sequence": 1}))
    assert count(client, stream) == 10


def test_a_key_used_without_offsets_refuses_a_new_producer(client: httpx.Client) -> None:
    stream = unique_name("key_then_producer")
    payload = ipc_bytes(batch(5))
    assert ok(post_binary(client, stream, payload, key="plain"))["duplicate"] is False
    # Still a plain retry without offsets.
    assert ok(post_binary(client, stream, payload, key="plain"))["duplicate"] is True
    offset = {"producer_id": "late", "sequence": 7}
    refused = post_binary(client, stream, payload, key="plain", params=offset)
    assert refused.status_code == 409, refused.text
    assert refused.json()["code"] == "idempotency_conflict"
    assert producer_state(client, stream, "late")["last_sequence"] is None
    assert count(client, stream) == 5


# -- restarts ------------------------------------------------------------------------------------


def test_keys_and_offsets_survive_a_restart(tmp_path: Path) -> None:
    db_path = tmp_path / "db.duckdb"
    payload = ipc_bytes(batch(25))
    params = {"producer_id": "durable", "sequence": 41}
    with (
        ArrowportProcess(tmp_path / "first", db_path=db_path) as first,
        httpx.Client(base_url=first.url, timeout=60) as http,
    ):
        ok(post_binary(http, "restart", payload, key="survivor"))
        ok(post_binary(http, "restart", ipc_bytes(batch(25, 25)), params=params))
        assert first.stop() == 0
    with (
        ArrowportProcess(tmp_path / "second", db_path=db_path) as second,
        httpx.Client(base_url=second.url, timeout=60) as http,
    ):
        again = ok(post_binary(http, "restart", payload, key="survivor"))
        assert again["duplicate"] is True
        assert again["rows_processed"] == 25
        conflict = post_binary(http, "restart", ipc_bytes(batch(3)), key="survivor")
        assert conflict.status_code == 409
        assert producer_state(http, "restart", "durable")["next_sequence"] == 42
        assert ok(post_binary(http, "restart", payload, params=params))["duplicate"] is True
        gap = post_binary(
            http, "restart", payload, params={"producer_id": "durable", "sequence": 44}
        )
        assert gap.status_code == 409
        assert gap.json()["expected_sequence"] == 42
        assert count(http, "restart") == 50
