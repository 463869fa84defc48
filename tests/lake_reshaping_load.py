"""A lake table replaced over and over while other threads read it (or append to another table),
through Arrowport's storage: run as a process of its own (``python -m tests.lake_reshaping_load
SETTINGS SECONDS reads|appends``), since one failure it looks for kills the process. Prints
what was done; exits 1 on a failed call."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable

import pyarrow as pa

from arrowport.config import DuckDBSettings, DuckLakeSettings
from arrowport.storage.lake import Lake
from arrowport.storage.query import run_query
from arrowport.storage.table_writer import WritePolicy
from arrowport.storage.writes import WriteJob

ROWS = 2000


def main(settings: dict[str, object], seconds: float, beside: str) -> int:
    lake = Lake(DuckDBSettings(path=":memory:"), DuckLakeSettings.model_validate(settings))
    stop = threading.Event()
    done = {"replaces": 0, "reads": 0, "appends": 0}
    failures: list[str] = []

    def ids(start: int) -> pa.Table:
        return pa.table({"k": pa.array(range(start, start + ROWS), pa.int64())})

    def replacing() -> None:
        start = 0
        while not stop.is_set():
            start += 1
            lake.write_one(WriteJob("reshaped", WritePolicy(mode="replace"), ids(start)))
            done["replaces"] += 1

    def reading() -> None:
        while not stop.is_set():
            result = run_query(lake, "SELECT count(*) AS n FROM reshaped")
            try:
                rows = result.read_all().column("n")[0].as_py()
            finally:
                result.close()
            if rows != ROWS:
                failures.append(f"a read saw {rows} rows, not {ROWS}")
            done["reads"] += 1

    def appending() -> None:
        one = pa.table({"x": pa.array([1], pa.int64())})
        while not stop.is_set():
            lake.write_one(WriteJob("appended", WritePolicy(), one))
            done["appends"] += 1

    def watched(work: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                work()
            except Exception as exc:
                failures.append(repr(exc)[:500])
                stop.set()

        return run

    try:
        lake.write_one(WriteJob("reshaped", WritePolicy(mode="replace"), ids(0)))
        others = reading if beside == "reads" else appending
        threads = [threading.Thread(target=watched(w)) for w in (replacing, others, others)]
        for thread in threads:
            thread.start()
        stop.wait(seconds)
        stop.set()
        for thread in threads:
            thread.join()
    finally:
        lake.close()
    print(json.dumps({"done": done, "failures": failures}))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(json.loads(sys.argv[1]), float(sys.argv[2]), sys.argv[3]))
