"""A full disk fails the write cleanly, and the server writes again once there is room.

The disk is "filled" by lowering the server process's file-size limit (RLIMIT_FSIZE, which the
server turns into write errors instead of being killed), then raising it again.
"""

from __future__ import annotations

import contextlib
import json
import resource
from collections.abc import Iterator
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from tests.conftest import ARROW_STREAM, ipc_bytes, query
from tests.server import ArrowportProcess


@contextlib.contextmanager
def disk_full(server: ArrowportProcess) -> Iterator[None]:
    """The server can write no file past the size of its largest database file, until the
    block ends."""
    assert server.proc is not None
    files = [server.db_path, Path(f"{server.db_path}.wal")]
    size = max(f.stat().st_size for f in files if f.exists())
    unlimited = resource.prlimit(server.proc.pid, resource.RLIMIT_FSIZE)
    resource.prlimit(server.proc.pid, resource.RLIMIT_FSIZE, (size, unlimited[1]))
    try:
        yield
    finally:
        resource.prlimit(server.proc.pid, resource.RLIMIT_FSIZE, unlimited)


def post(client: httpx.Client, rows: int, start: int) -> httpx.Response:
    table = pa.table({"id": list(range(start, start + rows)), "pad": ["x" * 64] * rows})
    return client.post(
        "/stream/diskfull", content=ipc_bytes(table), headers={"Content-Type": ARROW_STREAM}
    )


@pytest.mark.parametrize("rows", [400_000, 2_000], ids=["streamed", "group_committed"])
def test_disk_full_is_507_and_writes_resume_when_space_is_back(tmp_path: Path, rows: int) -> None:
    """A large request fails while DuckDB writes it; a small one at its group's commit (the
    write-ahead log), which DuckDB reports as a transaction error, and was a 500."""
    with (
        ArrowportProcess(tmp_path) as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        assert post(client, 1000, 0).status_code == 200
        with disk_full(server):
            refused = post(client, rows, 1000)
            assert refused.status_code == 507, refused.text
            assert refused.json()["code"] == "insufficient_storage"
            assert client.get("/health").status_code == 200
        again = post(client, 1000, 2_000_000)
        assert again.status_code == 200, again.text
        ids = query(client, "SELECT count(*) AS n, min(id) AS lo FROM diskfull").to_pylist()
        assert ids == [{"n": 2000, "lo": 0}]


def test_a_full_disk_is_a_warning_with_the_request_id(tmp_path: Path) -> None:
    """Its refusals were info lines among the access lines: at `logging.level: warning` (how a
    busy server keeps its log small) a full disk left no line at all, over HTTP or Flight."""
    config = {"logging": {"level": "warning"}}
    with (
        ArrowportProcess(tmp_path, config=config) as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        assert post(client, 1000, 0).status_code == 200
        with disk_full(server):
            refused = post(client, 2_000, 1000)
            assert refused.status_code == 507, refused.text
            put = flight.connect(server.flight_url)
            table = pa.table({"id": list(range(5000, 7000)), "pad": ["x" * 64] * 2000})
            writer, _ = put.do_put(flight.FlightDescriptor.for_path("diskfull"), table.schema)
            writer.write_table(table)
            with pytest.raises(pa.ArrowException, match="insufficient_storage"):
                writer.close()
        logged = [json.loads(line) for line in server.lines if line.startswith("{")]
    warnings = [line for line in logged if line.get("code") == "insufficient_storage"]
    assert [(line["event"], line["level"]) for line in warnings] == [
        ("request refused", "warning"),
        ("flight request refused", "warning"),
    ]
    assert warnings[0]["request_id"] == refused.headers["x-request-id"]
