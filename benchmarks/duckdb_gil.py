"""How much DuckDB's Python API waits for the GIL: one group commit's insert and commit (16,000
rows of the benchmark's table), alone and beside a Python thread that never sleeps (what a busy
event loop or gRPC handler thread is to the group writer), for each way of handing DuckDB the
rows: a registered view inserted by name, a relation insert of a pyarrow Table, and a relation
insert of the Table's Arrow C stream (what the group writer does).

    python -m benchmarks.duckdb_gil [--rows 16000] [--repeats 50]

Each time the API hands the GIL back and takes it again, a busy thread may hold it for up to
``sys.getswitchinterval()`` (5 ms); the slowdown divided by that interval is about how many
times one insert and commit takes it back.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable

import duckdb
import pyarrow as pa

from benchmarks import data

Insert = Callable[[duckdb.DuckDBPyConnection, pa.Table], None]


def _registered(cur: duckdb.DuckDBPyConnection, table: pa.Table) -> None:
    cur.register("src", table)
    cur.execute("INSERT INTO t BY NAME SELECT * FROM src").fetchone()
    cur.unregister("src")


def _relation(cur: duckdb.DuckDBPyConnection, table: pa.Table) -> None:
    cur.from_arrow(table).insert_into("t")


def _c_stream(cur: duckdb.DuckDBPyConnection, table: pa.Table) -> None:
    cur.from_arrow(table.__arrow_c_stream__()).insert_into("t")


_WAYS: dict[str, Insert] = {
    "registered view, BY NAME": _registered,
    "relation of a Table": _relation,
    "relation of a C stream": _c_stream,
}


def _insert_and_commit_ms(
    cur: duckdb.DuckDBPyConnection, insert: Insert, table: pa.Table, repeats: int
) -> float:
    started = time.perf_counter()
    for _ in range(repeats):
        cur.begin()
        insert(cur, table)
        cur.commit()
    return (time.perf_counter() - started) / repeats * 1000


def _beside_busy_thread(measure: Callable[[], float]) -> float:
    stop = threading.Event()

    def busy() -> None:
        while not stop.is_set():
            pass

    spinner = threading.Thread(target=busy, daemon=True)
    spinner.start()
    try:
        return measure()
    finally:
        stop.set()
        spinner.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=16_000)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    table = data.make_table(args.rows).combine_chunks()
    interval_ms = sys.getswitchinterval() * 1000
    print(f"insert + commit of {args.rows:,} rows [os.cpu_count() {os.cpu_count()}]")
    print(f"  {'':26s} {'alone':>9s} {'beside a busy thread':>21s} {'GIL taken back':>15s}")
    with tempfile.TemporaryDirectory() as workdir:
        con = duckdb.connect(os.path.join(workdir, "gil.duckdb"))
        con.register("seed", table)
        con.execute("CREATE TABLE t AS SELECT * FROM seed LIMIT 0")
        con.unregister("seed")
        cur = con.cursor()
        for name, insert in _WAYS.items():
            _insert_and_commit_ms(cur, insert, table, 3)  # warm-up
            alone = _insert_and_commit_ms(cur, insert, table, args.repeats)
            beside = _beside_busy_thread(
                functools.partial(_insert_and_commit_ms, cur, insert, table, args.repeats)
            )
            taken = (beside - alone) / interval_ms
            print(f"  {name:26s} {alone:6.2f} ms {beside:18.2f} ms {taken:11.0f} times")
        con.close()


if __name__ == "__main__":
    main()
