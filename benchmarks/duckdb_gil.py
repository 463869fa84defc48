"""How much DuckDB's Python API waits for the GIL: one group commit's insert and commit (16,000
rows of the benchmark's table, registered, inserted by name, unregistered, committed), alone and
beside a Python thread that never sleeps (what a busy event loop or gRPC handler thread is to the
group writer).

    python -m benchmarks.duckdb_gil [--rows 16000] [--repeats 50]

Each time the API hands the GIL back and takes it again, a busy thread may hold it for up to
``sys.getswitchinterval()`` (5 ms); the slowdown divided by that interval is about how many
times one insert and commit takes it back.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time

import duckdb

from benchmarks import data


def _insert_and_commit_ms(cur: duckdb.DuckDBPyConnection, table: object, repeats: int) -> float:
    started = time.perf_counter()
    for _ in range(repeats):
        cur.begin()
        cur.register("src", table)
        cur.execute("INSERT INTO t BY NAME SELECT * FROM src").fetchone()
        cur.unregister("src")
        cur.commit()
    return (time.perf_counter() - started) / repeats * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=16_000)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    table = data.make_table(args.rows)
    with tempfile.TemporaryDirectory() as workdir:
        con = duckdb.connect(os.path.join(workdir, "gil.duckdb"))
        con.register("seed", table)
        con.execute("CREATE TABLE t AS SELECT * FROM seed LIMIT 0")
        con.unregister("seed")
        cur = con.cursor()
        _insert_and_commit_ms(cur, table, 3)  # warm-up
        alone = _insert_and_commit_ms(cur, table, args.repeats)
        stop = threading.Event()

        def busy() -> None:
            while not stop.is_set():
                pass

        spinner = threading.Thread(target=busy, daemon=True)
        spinner.start()
        try:
            beside = _insert_and_commit_ms(cur, table, args.repeats)
        finally:
            stop.set()
            spinner.join()
        con.close()
    interval_ms = sys.getswitchinterval() * 1000
    print(f"insert + commit of {args.rows:,} rows [os.cpu_count() {os.cpu_count()}]")
    print(f"  alone:                      {alone:8.2f} ms")
    print(f"  beside a busy Python thread: {beside:8.2f} ms")
    print(f"  GIL taken back ~{(beside - alone) / interval_ms:.0f} times per insert and commit")


if __name__ == "__main__":
    main()
