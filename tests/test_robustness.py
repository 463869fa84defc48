"""Edge cases of the write path: carried-over group members, slots, bombs, shutdown, Flight limits."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
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


# -- large JSON/base64 bodies: decoded as they are read ------------------------------------------

MiB = 1024**2


def json_body(data: str, table: str, schema: pa.Schema | None = None) -> bytes:
    batch = {"data": data}
    if schema is not None:
        batch["arrow_schema"] = base64.b64encode(schema.serialize().to_pybytes()).decode()
    return json.dumps({"config": {"target_table": table}, "batch": batch}).encode()


def post_json_body(client: httpx.Client, body: bytes, **headers: str) -> httpx.Response:
    return client.post(
        "/stream/big_json", content=body, headers={"Content-Type": "application/json", **headers}
    )


def test_a_large_json_body_is_read_in_flat_memory(tmp_path: Path) -> None:
    rows = 4_000_000  # ~160 MB of IPC, a ~210 MB body
    table = pa.table(
        {
            "id": pa.array(range(rows), pa.int64()),
            "v": pa.array(np.random.default_rng(0).random(rows)),
            "c": pa.array(np.arange(rows) % 7),
            "t": pa.array(np.arange(rows) * 1_000, pa.int64()),
            "w": pa.array(np.random.default_rng(1).random(rows)),
        }
    )
    data = ipc_bytes(table, batch_rows=10_000)
    del table
    body = json_body(base64.b64encode(data).decode(), "big_json")
    del data
    assert len(body) > 200_000_000
    with (
        ArrowportProcess(tmp_path) as server,
        httpx.Client(base_url=server.url, timeout=300) as http,
    ):
        assert server.proc is not None
        before = server.peak_rss()
        response = post_json_body(http, body)
        assert response.status_code == 200, response.text
        assert response.json()["rows_processed"] == rows
        grown = server.peak_rss() - before
        assert rows_in(http, "big_json") == rows
    # Read as it arrives: neither the body nor its decoded payload is ever held whole.
    assert grown < 300 * MiB, f"peak RSS grew {grown / MiB:.0f} MiB for {len(body) / MiB:.0f} MiB"


def large_ipc(rows: int = 200_000) -> bytes:
    rng = np.random.default_rng(2)
    table = pa.table({"id": pa.array(range(rows), pa.int64()), "v": pa.array(rng.random(rows))})
    return ipc_bytes(table, batch_rows=10_000)


def test_invalid_base64_deep_in_a_large_json_body_writes_nothing(client: httpx.Client) -> None:
    encoded = base64.b64encode(large_ipc()).decode()
    assert len(encoded) > 2 * MiB
    cut = len(encoded) - 4_000
    bad_character = encoded[:cut] + "!" + encoded[cut + 1 :]
    # Two base64 texts glued together: padding in the middle, valid piece by piece.
    padded = base64.b64encode(large_ipc()[:-1]).decode()
    assert padded.endswith("=")
    bad_padding = padded + encoded
    for name, text in (("b64_char", bad_character), ("b64_padding", bad_padding)):
        response = post_json_body(client, json_body(text, name))
        assert response.status_code == 400, response.text
        assert response.json()["code"] == "invalid_base64"
        assert client.get(f"/tables/{name}").status_code == 404
    response = post_json_body(client, json_body(encoded[:-2], "b64_length"))
    assert response.json()["code"] == "invalid_base64"


def test_a_large_json_body_keeps_its_checks(client: httpx.Client) -> None:
    data = large_ipc()
    encoded = base64.b64encode(data).decode()
    declared = pa.schema([("other", pa.int64())])
    mismatch = post_json_body(client, json_body(encoded, "big_mismatch", declared))
    assert mismatch.status_code == 400, mismatch.text
    assert mismatch.json()["code"] == "schema_mismatch"
    cut = base64.b64encode(data[:-8]).decode()  # no end-of-stream marker
    truncated = post_json_body(client, json_body(cut, "big_cut"))
    assert truncated.json()["code"] == "truncated_stream"
    frame = base64.b64encode(zstandard.compress(data)).decode()
    assert len(frame) > 2 * MiB
    response = post_json_body(client, json_body(frame, "big_zstd"))
    assert response.status_code == 200, response.text
    assert rows_in(client, "big_zstd") == 200_000
    for table in ("big_mismatch", "big_cut"):
        assert client.get(f"/tables/{table}").status_code == 404


def test_a_large_json_body_and_its_binary_twin_share_an_idempotency_key(
    client: httpx.Client,
) -> None:
    data = large_ipc()
    body = json_body(base64.b64encode(data).decode(), "big_once")
    first = post_json_body(client, body, **{"Idempotency-Key": "big-json-1"})
    assert first.status_code == 200, first.text
    assert first.json()["duplicate"] is False
    again = post_json_body(client, body, **{"Idempotency-Key": "big-json-1"})
    assert again.json()["duplicate"] is True
    binary = client.post(
        "/stream/big_json?table=big_once",
        content=data,
        headers={"Content-Type": ARROW_STREAM, "Idempotency-Key": "big-json-1"},
    )
    assert binary.json()["duplicate"] is True
    other = json_body(base64.b64encode(large_ipc(100)).decode(), "big_once")
    conflict = post_json_body(client, other, **{"Idempotency-Key": "big-json-1"})
    assert conflict.json()["code"] == "idempotency_conflict"
    assert rows_in(client, "big_once") == 200_000


def test_a_large_json_body_in_an_unusual_order_still_lands(client: httpx.Client) -> None:
    data = large_ipc()
    encoded = base64.b64encode(data).decode()
    schema = base64.b64encode(pa.ipc.read_schema(pa.py_buffer(data)).serialize()).decode()
    # config after batch: read whole; arrow_schema after data: checked at the end.
    for name, text in (
        (
            "late_config",
            f'{{"batch": {{"data": "{encoded}"}}, "config": {{"target_table": "late_config"}}}}',
        ),
        (
            "late_schema",
            f'{{"config": {{"target_table": "late_schema"}}, "batch": {{"data": "{encoded}", "arrow_schema": "{schema}"}}}}',
        ),
    ):
        response = post_json_body(client, text.encode())
        assert response.status_code == 200, response.text
        assert rows_in(client, name) == 200_000


def test_a_large_json_body_is_refused_whole_for_what_follows_its_data(
    client: httpx.Client,
) -> None:
    encoded = base64.b64encode(large_ipc()).decode()
    other = base64.b64encode(pa.schema([("x", pa.int8())]).serialize()).decode()
    head = '{"config": {"target_table": "%s"}, "batch": {"data": "' + encoded + '"'
    cases = {
        "tail_broken": (head + "}", "invalid_json"),
        "tail_schema": (head + ', "arrow_schema": "' + other + '"}}', "schema_mismatch"),
        "tail_config": (head + '}, "config": {"target_table": "elsewhere"}}', "invalid_options"),
        "tail_unknown": (head + '}, "extra": 1}', "invalid_options"),
    }
    for table, (text, code) in cases.items():
        response = post_json_body(client, (text % table).encode())
        assert response.status_code in (400, 422), response.text
        assert response.json()["code"] == code, response.text
        assert client.get(f"/tables/{table}").status_code == 404
    assert client.get("/tables/elsewhere").status_code == 404


@pytest.mark.parametrize("rows", [10, 200_000])
def test_a_json_body_sent_without_content_length_lands(client: httpx.Client, rows: int) -> None:
    body = json_body(base64.b64encode(large_ipc(rows)).decode(), f"chunked_json_{rows}")

    def pieces() -> Iterator[bytes]:
        for start in range(0, len(body), 100_000):
            yield body[start : start + 100_000]

    response = client.post(
        "/stream/big_json", content=pieces(), headers={"Content-Type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    assert response.status_code == 200, response.text
    assert rows_in(client, f"chunked_json_{rows}") == rows


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
