"""The transport's own ceiling: a bare ``pyarrow.flight`` server that hands each put to DuckDB.

It does only what no Flight ingest server can skip — receive the put over gRPC, scan it with
DuckDB in one ``INSERT … BY NAME`` and commit — and none of what Arrowport adds (authentication,
validation, realignment of misaligned gRPC buffers, delivery bookkeeping, admission, metrics). Its
ratio to the in-process insert is therefore the best any Flight server can reach on this machine,
and the gap between it and Arrowport's ``Flight do_put`` is what Arrowport itself costs.

Run as ``python -m benchmarks.bare_flight DB_PATH``: it prints ``{"port": N}`` on one line once it
listens, and serves until stdin closes. Not a product; it lives here only to be measured.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.flight as flight

from benchmarks.servers import row_stats_sql


class BareFlightServer(flight.FlightServerBase):  # type: ignore[misc]
    def __init__(self, db_path: str) -> None:
        super().__init__("grpc://127.0.0.1:0")
        self._db = duckdb.connect(db_path)
        self._create = threading.Lock()

    def do_put(
        self,
        context: flight.ServerCallContext,
        descriptor: flight.FlightDescriptor,
        reader: flight.MetadataRecordBatchReader,
        writer: flight.FlightMetadataWriter,
    ) -> None:
        table = '"' + descriptor.path[0].decode().replace('"', '""') + '"'
        cur = self._db.cursor()
        try:
            cur.register("upload", reader.to_reader())
            with self._create:
                cur.execute(f"CREATE TABLE IF NOT EXISTS {table} AS SELECT * FROM upload LIMIT 0")
            cur.begin()
            row = cur.execute(f"INSERT INTO {table} BY NAME SELECT * FROM upload").fetchone()
            cur.commit()
        finally:
            cur.close()
        rows = int(row[0]) if row else 0
        writer.write(pa.py_buffer(json.dumps({"rows_processed": rows}).encode()))


def _serve(db_path: str) -> None:
    server = BareFlightServer(db_path)
    print(json.dumps({"port": server.port}), flush=True)
    sys.stdin.read()  # until the parent closes our stdin
    server.shutdown()


@contextmanager
def running(db_path: Path) -> Iterator[int]:
    """Start the bare server on ``db_path`` in a child process; yields its port."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.bare_flight", str(db_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        # DuckDB scans the misaligned gRPC buffers as they are, and Arrow warns about each one.
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("the bare Flight server did not start")
        yield int(json.loads(line)["port"])
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def landed(db_path: Path, table: str) -> dict[str, Any]:
    """:func:`~benchmarks.servers.row_stats_sql` of ``table``, read after the server stopped."""
    with duckdb.connect(str(db_path), read_only=True) as con:
        cursor = con.execute(row_stats_sql(table))
        names = [column[0] for column in cursor.description]
        row = cursor.fetchone()
    assert row is not None
    return dict(zip(names, row, strict=True))


if __name__ == "__main__":
    _serve(sys.argv[1])
