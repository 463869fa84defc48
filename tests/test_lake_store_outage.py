"""A lake's object store that goes away while it is read, or stops answering: the answer is
503 ``storage_unavailable`` (the client may retry) within the store's timeout, never 400
``query_error`` (which tells it its query is wrong) nor a request held for as long as the store
hangs; ``/ready`` says so, and the server stays up.

The lake here has an S3 store of its own (a real moto server, started for the test, so that
stopping it disturbs no other test) and a SQLite catalog, which stays up: only the store fails.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from tests.conftest import ipc_bytes, post_binary, query
from tests.server import ArrowportProcess, free_port

BUCKET = "outage"
PUTS = 8
ROWS_PER_PUT = 400_000


@dataclass
class Store:
    endpoint: str
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(30)

    def freeze(self) -> None:
        """The store stops answering, but its connections stay open: requests hang."""
        os.kill(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)


@pytest.fixture
def store() -> Iterator[Store]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            # moto checks no signature: an unsigned PUT creates the bucket.
            request = urllib.request.Request(f"http://127.0.0.1:{port}/{BUCKET}", method="PUT")
            urllib.request.urlopen(request, timeout=5).close()
            break
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise
            time.sleep(0.2)
    found = Store(f"127.0.0.1:{port}", process)
    yield found
    found.stop()


def lake_on(tmp_path: Path, store: Store, **settings: object) -> dict[str, object]:
    return {
        "storage": {"target": "ducklake"},
        "ducklake": {
            "catalog": f"sqlite:{tmp_path / 'catalog.sqlite'}",
            "data_path": f"s3://{BUCKET}/lake/",
            "s3_endpoint": store.endpoint,
            "s3_key_id": "arrowport",
            "s3_secret": "not checked by moto",
            "s3_region": "us-east-1",
            "s3_url_style": "path",
            "s3_use_ssl": False,
            **settings,
        },
    }


@pytest.fixture
def node(tmp_path: Path, store: Store) -> Iterator[ArrowportProcess]:
    with ArrowportProcess(tmp_path / "node", config=lake_on(tmp_path, store)) as process:
        yield process


def rows(start: int, count: int = ROWS_PER_PUT) -> pa.Table:
    values = np.random.default_rng(start).random(count)
    return pa.table(
        {"id": pa.array(range(start, start + count), pa.int64()), "v": pa.array(values)}
    )


def test_a_read_whose_store_goes_away_is_unavailable_not_a_query_error(
    node: ArrowportProcess, store: Store
) -> None:
    with httpx.Client(base_url=node.url, timeout=120) as http:
        for table in ("read_first", "read_later"):
            for put in range(PUTS):  # a Parquet file each, in the store
                body = ipc_bytes(rows(put * ROWS_PER_PUT))
                assert post_binary(http, table, body).status_code == 200
        total = query(http, "SELECT count(*) AS n FROM read_first").to_pylist()
        assert total == [{"n": PUTS * ROWS_PER_PUT}]

        # A Flight read streams as the client takes it: after its first batch, the store goes.
        client = flight.connect(node.flight_url)
        ticket = flight.Ticket(json.dumps({"sql": "SELECT id, v FROM read_first"}).encode())
        reader = client.do_get(ticket)
        first = reader.read_chunk()
        assert first.data.num_rows > 0
        store.stop()
        with pytest.raises(flight.FlightUnavailableError, match="storage_unavailable: "):
            reader.read_all()  # the rest (were it all read already, nothing would be raised)
        client.close()

        # A query that starts with the store gone: the same answer, with a time to retry.
        response = http.post("/query", json={"sql": "SELECT sum(v) AS s FROM read_later"})
        assert response.status_code == 503, response.text
        assert response.json()["code"] == "storage_unavailable"
        assert "Retry-After" in response.headers

        assert http.get("/health").status_code == 200
    assert node.alive()


def ready_problem(http: httpx.Client) -> str | None:
    response = http.get("/ready")
    if response.status_code == 200:
        return None
    assert response.status_code == 503, response.text
    assert response.json()["code"] == "storage_error"
    message: str = response.json()["message"]
    return message


def test_a_store_that_stops_answering_fails_writes_and_readiness_promptly(
    tmp_path: Path, store: Store
) -> None:
    # Short enough for a quick test, long enough for a loaded machine's healthy store.
    config = lake_on(tmp_path, store, store_timeout_seconds=2, store_retries=0)
    small = 10_000  # still written to a Parquet file in the store, not inlined in the catalog
    with (
        ArrowportProcess(tmp_path / "node", config=config) as node,
        httpx.Client(base_url=node.url, timeout=120) as http,
    ):
        assert post_binary(http, "hung", ipc_bytes(rows(0, small))).status_code == 200
        assert ready_problem(http) is None

        store.freeze()
        try:
            # Without a timeout of its own a write waited for as long as the store hung.
            first = {"Idempotency-Key": "hung-store-1"}
            answer = post_binary(http, "hung", ipc_bytes(rows(ROWS_PER_PUT, small)), headers=first)
            assert answer.status_code == 503, answer.text
            assert answer.json()["code"] == "storage_unavailable"
            assert "Retry-After" in answer.headers

            deadline = time.monotonic() + 60
            while (problem := ready_problem(http)) is None:
                assert time.monotonic() < deadline, "/ready stayed 200 with the store hung"
                time.sleep(0.5)
            assert "object store" in problem

            # Known to be out of reach now: the next write is refused without waiting on it.
            second = {"Idempotency-Key": "hung-store-2"}
            answer = post_binary(
                http, "hung", ipc_bytes(rows(2 * ROWS_PER_PUT, small)), headers=second
            )
            assert answer.status_code == 503, answer.text
            assert answer.json()["code"] == "storage_unavailable"
            assert "object store" in answer.json()["message"]

            response = http.post("/query", json={"sql": "SELECT sum(v) AS s FROM hung"})
            assert response.status_code == 503, response.text
            assert response.json()["code"] == "storage_unavailable"
            assert http.get("/health").status_code == 200
        finally:
            store.thaw()

        deadline = time.monotonic() + 60
        while ready_problem(http) is not None:
            assert time.monotonic() < deadline, "/ready stayed 503 with the store back"
            time.sleep(0.5)
        # Neither refused write was committed: sent again, each lands once.
        for start, key in ((ROWS_PER_PUT, first), (2 * ROWS_PER_PUT, second)):
            again = post_binary(http, "hung", ipc_bytes(rows(start, small)), headers=key)
            assert again.status_code == 200, again.text
            assert again.json()["duplicate"] is False
        total = query(http, "SELECT count(*) AS n, count(DISTINCT id) AS d FROM hung")
        expected = 3 * small
        assert total.to_pylist() == [{"n": expected, "d": expected}]
        assert node.alive()
