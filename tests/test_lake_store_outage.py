"""A lake's object store that goes away while it is read: the answer is 503
``storage_unavailable`` (the client may retry), never 400 ``query_error`` (which tells it its
query is wrong), and the server stays up.

The lake here has an S3 store of its own (a real moto server, started for the test, so that
stopping it disturbs no other test) and a SQLite catalog, which stays up: only the store fails.
"""

from __future__ import annotations

import json
import socket
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
from tests.server import ArrowportProcess

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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


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


@pytest.fixture
def node(tmp_path: Path, store: Store) -> Iterator[ArrowportProcess]:
    config = {
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
        },
    }
    with ArrowportProcess(tmp_path / "node", config=config) as process:
        yield process


def rows(start: int) -> pa.Table:
    values = np.random.default_rng(start).random(ROWS_PER_PUT)
    return pa.table(
        {"id": pa.array(range(start, start + ROWS_PER_PUT), pa.int64()), "v": pa.array(values)}
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
