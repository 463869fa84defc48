"""The peer: DuckDB's own client-server protocol (Quack), served by a bare DuckDB process.

Quack (the ``quack`` extension, beta in DuckDB 1.5) is what a DuckDB user would run instead of an
ingest server: one DuckDB process serves its database file over HTTP
(``CALL quack_serve('quack:localhost:PORT', token => …)``), and other DuckDB instances
``ATTACH 'quack:localhost:PORT' AS remote (TOKEN …)`` and ``INSERT INTO remote.t SELECT * FROM
<arrow table>``. Both ends load ``httpfs`` and ``quack`` from their PyPI packages
(``duckdb-extension-*``, the dev extras); nothing is downloaded.

Run as ``python -m benchmarks.quack DB_PATH``: it prints ``{"port": N}`` on one line once it
serves, and serves until stdin closes. Not a product; it lives here only to be measured.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import duckdb
import pyarrow as pa

# quack_serve refuses tokens shorter than 4 characters.
TOKEN = "arrowport-bench"
_CONFIG = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}


def connect(database: str = ":memory:", threads: int | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB with ``httpfs`` and ``quack`` loaded offline.

    Both ends need ``httpfs``: without it DuckDB has only a read-only crypto module and the
    Quack server answers the client's handshake with HTTP 500 ("read-only crypto module")."""
    import duckdb_extensions

    config: dict[str, str | bool | int | float | list[str]] = dict(_CONFIG)
    if threads is not None:
        config["threads"] = threads
    con = duckdb.connect(database, config=config)
    for name in ("httpfs", "quack"):
        duckdb_extensions.import_extension(name, con=con)
        con.execute(f"LOAD {name}")
    return con


def _free_port() -> int:
    # quack_serve rejects port 0, so ask the kernel for a free one first.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serve(db_path: str) -> None:
    con = connect(db_path)
    for attempt in range(5):
        port = _free_port()
        try:
            con.execute(f"CALL quack_serve('quack:localhost:{port}', token => '{TOKEN}')")
            break
        except duckdb.Error:
            if attempt == 4:
                raise
    print(json.dumps({"port": port}), flush=True)
    sys.stdin.read()  # until the parent closes our stdin
    con.execute(f"CALL quack_stop('quack:localhost:{port}')")
    con.close()


class Served(NamedTuple):
    port: int
    pid: int


@contextmanager
def running(db_path: Path) -> Iterator[Served]:
    """Start the Quack server on ``db_path`` in a child process; yields its port and pid."""
    log = db_path.with_suffix(".log")
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.quack", str(db_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            proc.wait(timeout=60)
            raise RuntimeError(f"the Quack server did not start: {log.read_text().strip()[-500:]}")
        yield Served(int(json.loads(line)["port"]), proc.pid)
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Client:
    """One DuckDB instance with the Quack server attached as ``remote``: its own connection.

    Example::

        with Client(port) as client:
            client.create("t", table)
            seconds = client.insert("t", table)
    """

    def __init__(self, port: int, threads: int | None = None) -> None:
        self.con = connect(threads=threads)
        self.con.execute(f"ATTACH 'quack:localhost:{port}' AS remote (TOKEN '{TOKEN}')")

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.con.close()

    def create(self, name: str, table: pa.Table) -> None:
        """Create ``remote.<name>`` with DuckDB's mapping of ``table``'s Arrow types."""
        self.con.register("src", table)
        self.con.execute(f'CREATE TABLE remote."{name}" AS SELECT * FROM src LIMIT 0')
        self.con.unregister("src")

    def insert(self, name: str, table: pa.Table) -> float:
        """Seconds for one ``INSERT`` of ``table`` (one transaction on the server)."""
        self.con.register("src", table)
        started = time.perf_counter()
        self.con.execute(f'INSERT INTO remote."{name}" SELECT * FROM src')
        seconds = time.perf_counter() - started
        self.con.unregister("src")
        return seconds


def unavailable() -> str | None:
    """Why the Quack case cannot run here, or None."""
    try:
        connect().close()
    except (ImportError, duckdb.Error) as exc:
        return f"quack: {type(exc).__name__}: {exc}"
    return None


if __name__ == "__main__":
    _serve(sys.argv[1])
