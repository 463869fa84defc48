"""The limit: DuckDB inserting the same Arrow data in this process, into a file-backed database.

The table is created the way the server creates it (DuckDB's own Arrow type mapping, via
``CREATE TABLE … AS SELECT … LIMIT 0``) before the clock starts; the timed part is
``BEGIN; INSERT INTO t BY NAME SELECT * FROM <arrow>; COMMIT`` — the same statement the server runs.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path

import duckdb
import pyarrow as pa


def _connect(path: Path) -> duckdb.DuckDBPyConnection:
    for suffix in ("", ".wal"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    con = duckdb.connect(str(path))
    return con


def _insert(con: duckdb.DuckDBPyConnection, table: pa.Table, source: str = "src") -> float:
    con.register(source, table)
    started = time.perf_counter()
    con.begin()
    con.execute(f"INSERT INTO t BY NAME SELECT * FROM {source}")
    con.commit()
    seconds = time.perf_counter() - started
    con.unregister(source)
    return seconds


class Limit:
    """A fresh database file with the table created and warmed up; :meth:`time` one insert.

    Used on its own, and interleaved with a server case (one in-process insert before each
    request), so that both see the same machine load.

    Example::

        with Limit(table, path) as limit:
            seconds = limit.time()
    """

    def __init__(self, table: pa.Table, db_path: Path) -> None:
        self.table = table
        self.db_path = db_path
        self._con: duckdb.DuckDBPyConnection | None = None

    def __enter__(self) -> Limit:
        con = self._con = _connect(self.db_path)
        con.register("src", self.table)
        con.execute("CREATE TABLE t AS SELECT * FROM src LIMIT 0")
        con.unregister("src")
        _insert(con, self.table)
        return self

    def time(self) -> float:
        assert self._con is not None
        return _insert(self._con, self.table)

    def __exit__(self, *exc: object) -> None:
        if self._con is not None:
            self._con.close()
        for suffix in ("", ".wal"):
            Path(str(self.db_path) + suffix).unlink(missing_ok=True)


def insert_times(table: pa.Table, db_path: Path, repeats: int) -> list[float]:
    """Seconds per one-transaction insert of ``table``; one warm-up insert is not counted."""
    with Limit(table, db_path) as limit:
        return [limit.time() for _ in range(repeats)]


def interleaved_times(
    tables: dict[str, pa.Table], workdir: Path, repeats: int
) -> dict[str, list[float]]:
    """Seconds per one-transaction insert of each table (its own fresh database file), one insert
    of each per round so that a busy moment on the machine hits them alike; one warm-up insert
    each is not counted."""
    with ExitStack() as stack:
        limits = {
            key: stack.enter_context(Limit(table, workdir / f"inproc_{key}.duckdb"))
            for key, table in tables.items()
        }
        times: dict[str, list[float]] = {key: [] for key in limits}
        for _ in range(repeats):
            for key, limit in limits.items():
                times[key].append(limit.time())
    return times


def sequential_small(batches: list[pa.Table], db_path: Path) -> list[float]:
    """Seconds per insert+commit, one small batch per transaction, one after another."""
    con = _connect(db_path)
    try:
        con.register("src", batches[0])
        con.execute("CREATE TABLE t AS SELECT * FROM src LIMIT 0")
        con.unregister("src")
        _insert(con, batches[0])
        return [_insert(con, batch) for batch in batches]
    finally:
        con.close()
