"""Edge cases of the write path: carried-over group members, slots, bombs, shutdown, Flight limits."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.flight as flight
import pytest
import zstandard

from tests.conftest import ARROW_STREAM, ipc_bytes, query
from tests.server import ArrowportProcess


def rows_in(client: httpx.Client, table: str) -> int:
    return int(query(client, f"SELECT count(*) AS n FROM {table}").column("n")[0].as_py())


def flight_put(
    client: flight.FlightClient, command: dict[str, Any], table: pa.Table
) -> dict[str, Any]:
    descriptor = flight.FlightDescriptor.for_command(json.dumps(command).encode())
    writer, reader = client.do_put(descriptor, table.schema)
    writer.write_table(table)
    writer.done_writing()
    reply = reader.read()
    writer.close()
    assert reply is not None
    return json.loads(reply.to_pybytes())  # type: ignore[no-any-return]


def test_group_members_carried_to_the_next_group_land_whole(tmp_path: Path) -> None:
    # max_rows 10 with a wait: two concurrent 8-row puts never fit one group, so one is carried.
    config = {"group_commit": {"max_rows": 10, "max_wait_ms": 100}}
    with ArrowportProcess(tmp_path, config=config) as server:
        replies: list[dict[str, Any]] = []

        def put(start: int) -> None:
            client = flight.connect(server.flight_url)
            table = pa.table({"id": list(range(start, start + 8))})
            replies.append(flight_put(client, {"stream_name": "carried"}, table))
            client.close()

        threads = [threading.Thread(target=put, args=(i * 100,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(r["rows_processed"] for r in replies) == [8, 8, 8, 8]
        with httpx.Client(base_url=server.url, timeout=30) as client:
            assert rows_in(client, "carried") == 32


def test_refused_large_uploads_do_not_leak_streaming_slots(tmp_path: Path) -> None:
    config = {"limits": {"max_streaming_writes": 2, "small_body_bytes": 1024}}
    body = ipc_bytes(pa.table({"id": list(range(5000))}))
    assert len(body) > 1024
    with (
        ArrowportProcess(tmp_path, config=config) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        headers = {"Content-Type": ARROW_STREAM}
        for _ in range(5):  # producer_id without sequence: refused after admission
            bad = client.post("/stream/slots?producer_id=p", content=body, headers=headers)
            assert bad.status_code == 422, bad.text
        good = client.post("/stream/slots", content=body, headers=headers)
        assert good.status_code == 200, good.text
        assert rows_in(client, "slots") == 5000


def test_small_compressed_bomb_is_refused_without_memory_growth(tmp_path: Path) -> None:
    config = {"limits": {"max_body_bytes": 8 * 1024**2}}
    table = pa.table({"z": pa.array([0] * 4_000_000, pa.int64())})  # 32 MB of zeros
    bomb = zstandard.ZstdCompressor(level=19).compress(ipc_bytes(table))
    assert len(bomb) < 1024**2
    with (
        ArrowportProcess(tmp_path, config=config) as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        response = client.post(
            "/stream/bomb",
            content=bomb,
            headers={"Content-Type": ARROW_STREAM, "Content-Encoding": "zstd"},
        )
        assert response.status_code == 413, response.text
        assert response.json()["code"] == "payload_too_large"
        assert client.get("/tables/bomb").status_code == 404
        assert server.healthy()


def test_sigterm_with_a_stalled_upload_still_exits_cleanly(tmp_path: Path) -> None:
    config = {"limits": {"shutdown_timeout_seconds": 2, "body_timeout_seconds": 120}}
    server = ArrowportProcess(tmp_path, config=config).start()
    try:
        body = ipc_bytes(pa.table({"id": list(range(300_000))}))
        head = (
            f"POST /stream/stalled HTTP/1.1\r\nHost: x\r\nContent-Type: {ARROW_STREAM}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as raw:
            raw.sendall(head + body[: len(body) // 2])  # and then nothing more
            time.sleep(1.0)
            started = time.monotonic()
            assert server.stop(timeout=30) == 0
            assert time.monotonic() - started < 20
    finally:
        server.kill()


def test_flight_upload_over_the_body_limit_is_refused(tmp_path: Path) -> None:
    config = {"limits": {"max_body_bytes": 64 * 1024}}
    with ArrowportProcess(tmp_path, config=config) as server:
        client = flight.connect(server.flight_url)
        table = pa.table({"id": list(range(100_000))})
        with pytest.raises(pa.ArrowException) as caught:  # RESOURCE_EXHAUSTED
            flight_put(client, {"stream_name": "too_big"}, table)
        assert "payload_too_large" in str(caught.value)
        client.close()
        with httpx.Client(base_url=server.url, timeout=30) as http:
            assert http.get("/tables/too_big").status_code == 404


def test_flight_idempotency_fingerprint_sees_column_names_and_dictionaries(
    tmp_path: Path,
) -> None:
    with ArrowportProcess(tmp_path) as server:
        client = flight.connect(server.flight_url)
        command = {"stream_name": "fp", "idempotency_key": "k"}
        words = pa.array(["a", "b", "a"]).dictionary_encode()
        first = flight_put(client, command, pa.table({"w": words}))
        assert first["duplicate"] is False
        other_words = pa.DictionaryArray.from_arrays(words.indices, pa.array(["x", "y"]))
        with pytest.raises(pa.ArrowException) as caught:  # ALREADY_EXISTS
            flight_put(client, command, pa.table({"w": other_words}))
        assert "idempotency_conflict" in str(caught.value)
        again = flight_put(client, command, pa.table({"w": words}))
        assert again["duplicate"] is True
        client.close()


def test_config_sections_left_empty_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "empty-sections.yaml"
    path.write_text("api:\n  # host: 0.0.0.0\nlimits:\n")
    server = ArrowportProcess(tmp_path / "srv", args=["--config", str(path)])
    with server, httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.get("/health").status_code == 200


def test_json_query_answers_do_not_block_health(client: httpx.Client) -> None:
    answer = client.post(
        "/query",
        json={"sql": "SELECT i, i * 2 AS j FROM range(200000) t(i)"},
        headers={"Accept": "application/json"},
    )
    assert answer.status_code == 200
    assert answer.json()["row_count"] == 200_000
    assert client.get("/health").status_code == 200


def test_port_is_free_after_stop(tmp_path: Path) -> None:
    with ArrowportProcess(tmp_path) as server:
        port = server.port
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))


@pytest.mark.parametrize("stream", ["bad stream", "x" * 129, "a%0Ab", "-lead"])
def test_stream_names_are_bounded(client: httpx.Client, stream: str) -> None:
    response = client.post(
        f"/stream/{stream}",
        params={"table": "named_elsewhere"},
        content=ipc_bytes(pa.table({"a": [1]})),
        headers={"Content-Type": ARROW_STREAM},
    )
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "invalid_name"
    assert client.get("/tables/named_elsewhere").status_code == 404


def test_stream_names_may_carry_dots_and_dashes(client: httpx.Client) -> None:
    response = client.post(
        "/stream/events-v2.eu",
        params={"table": "events_v2_eu"},
        content=ipc_bytes(pa.table({"a": [1]})),
        headers={"Content-Type": ARROW_STREAM},
    )
    assert response.status_code == 200, response.text


def test_background_checkpoints_keep_the_wal_small(tmp_path: Path) -> None:
    config = {"duckdb": {"checkpoint_wal_bytes": 1024**2}}
    with (
        ArrowportProcess(tmp_path, config=config) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        wal = Path(f"{server.db_path}.wal")
        peak = 0
        for start in range(0, 60_000, 2_000):
            batch = pa.table({"id": list(range(start, start + 2_000)), "pad": ["y" * 40] * 2_000})
            response = client.post(
                "/stream/walled", content=ipc_bytes(batch), headers={"Content-Type": ARROW_STREAM}
            )
            assert response.status_code == 200
            peak = max(peak, wal.stat().st_size if wal.exists() else 0)
        deadline = time.monotonic() + 10
        while wal.exists() and wal.stat().st_size >= 1024**2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert peak > 0
        assert not wal.exists() or wal.stat().st_size < 1024**2
        assert rows_in(client, "walled") == 60_000


def test_large_json_bodies_with_escaped_slashes_land(client: httpx.Client) -> None:
    import base64

    table = pa.table({"id": list(range(200_000)), "v": [float(i) for i in range(200_000)]})
    data = base64.b64encode(ipc_bytes(table)).decode()
    assert "/" in data
    escaped = data.replace("/", "\\/")  # JSON allows it; some encoders write it
    body = '{"config": {"target_table": "escaped_json"}, "batch": {"data": "' + escaped + '"}}'
    assert len(body) > 1024**2
    response = client.post(
        "/stream/escaped", content=body.encode(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 200, response.text
    assert rows_in(client, "escaped_json") == 200_000


def test_unauthenticated_metrics_port_needs_consent_when_tokens_exist(tmp_path: Path) -> None:
    import subprocess
    import sys

    import yaml

    token = {"name": "ops", "secret_hash": "sha256:" + "0" * 64, "scopes": ["read"]}
    config = {"auth": {"tokens": [token]}, "api": {"metrics_port": 0}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "arrowport", "serve", "--config", str(path)]
    command += ["--port", "0", "--flight-port", "0", "--db", str(tmp_path / "db.duckdb")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert "auth.public_metrics" in done.stderr


def test_query_results_use_the_configured_ipc_compression(tmp_path: Path) -> None:
    config = {"compression": {"algorithm": "zstd", "level": 7}}
    with (
        ArrowportProcess(tmp_path, config=config) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        answer = client.post("/query", json={"sql": "SELECT 'x' || i AS s FROM range(50000) t(i)"})
        assert answer.status_code == 200
        reader = pa.ipc.open_stream(answer.content)
        assert reader.read_all().num_rows == 50_000
        plain = 50_000 * 6
        assert len(answer.content) < plain  # the buffers really are compressed


def test_runaway_queries_are_stopped_at_the_time_limit(tmp_path: Path) -> None:
    config = {"limits": {"query_timeout_seconds": 0.5}}
    with (
        ArrowportProcess(tmp_path, config=config) as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        slow = "SELECT sum(a.range * b.range) AS s FROM range(200000) a, range(200000) b"
        for accept in ("application/vnd.apache.arrow.stream", "application/json"):
            started = time.monotonic()
            answer = client.post("/query", json={"sql": slow}, headers={"Accept": accept})
            assert answer.status_code == 408, answer.text
            assert answer.json()["code"] == "query_timeout"
            assert time.monotonic() - started < 20
        assert query(client, "SELECT 42 AS x").to_pylist() == [{"x": 42}]
        assert server.healthy()
