"""A read whose lake catalog goes away between its first statement and its query, through
Arrowport's storage: run as a process of its own (``python -m tests.lake_read_outage
SETTINGS``), since the failure it looks for aborts the process. The catalog is paused right
after the read guard's look at the catalog (the only thing arranged here; the outage and
DuckDB's handling of it are real); then the same in a transaction (Flight SQL's). Prints what
each raised, then ``alive``. The catalog is the PostgreSQL that ARROWPORT_TEST_SERVICES_DIR names
(``tests.lake.OwnCatalog``), not the one other tests share."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import duckdb
import pyarrow as pa

from arrowport.config import DuckDBSettings, DuckLakeSettings
from arrowport.errors import ArrowportError
from arrowport.storage import query
from arrowport.storage.lake import Lake
from arrowport.storage.snapshot import Snapshot
from arrowport.storage.table_writer import WritePolicy
from arrowport.storage.writes import WriteJob

SERVICES = Path(__file__).resolve().parent.parent / "scripts" / "test_services.py"


def postgres(action: str) -> None:
    subprocess.run([sys.executable, str(SERVICES), f"{action}-postgres"], check=True, timeout=60)


def main(settings: dict[str, object]) -> int:
    lake = Lake(DuckDBSettings(path=":memory:"), DuckLakeSettings.model_validate(settings))
    lake.write_one(WriteJob("counted", WritePolicy(), pa.table({"k": pa.array([1, 2, 3])})))
    checked = query._check

    def check_then_lose_the_catalog(
        db: Lake, cur: duckdb.DuckDBPyConnection, sql: str, params: object = None
    ) -> None:
        checked(db, cur, sql, params)  # type: ignore[arg-type]
        postgres("pause")

    query._check = check_then_lose_the_catalog  # type: ignore[assignment]
    try:
        result = query.run_query(lake, "SELECT count(*) AS n FROM counted")
        result.close()
        print("the read ran")
    except ArrowportError as exc:
        print(f"the read failed: {exc.code}")
    finally:
        query._check = checked
        postgres("resume")
    # The same in a transaction of its own (Flight SQL's): its first query reads the catalog,
    # the next one finds it gone; the transaction then ends.
    snapshot = Snapshot(lake)
    with snapshot.query("SELECT count(*) AS n FROM counted", None) as rows:
        print(f"in the transaction: {sum(batch.num_rows for batch in rows.batches)} row")
    postgres("pause")
    try:
        with snapshot.query("SELECT sum(k) AS total FROM counted", None) as rows:
            list(rows.batches)
        print("the transaction's query ran")
    except ArrowportError as exc:
        print(f"the transaction's query failed: {exc.code}")
    finally:
        snapshot.close()
        postgres("resume")
    print("alive", flush=True)
    lake.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(json.loads(sys.argv[1])))
