"""The in-process limits each served figure is read against: DuckDB in this process, no server,
inserting the same rows into a DuckDB file and into a lake attached as a node attaches it — one
bulk transaction (its INSERT, which writes the Parquet to the store, timed apart from its
COMMIT, which writes the catalog), the same rows encoded as Parquet into a local file, small
insert+commits one after another, and one-row commits that DuckLake inlines in the catalog: the
lake's commit rate, with PostgreSQL's work per commit. Also the rows/s each limit comes to."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
from tests.lake import lake_config, new_lake_name

from benchmarks import inprocess
from benchmarks.lake.meter import Meter
from benchmarks.lake.plan import Plan
from benchmarks.lake.services import Services, catalog_counters, service_pids
from benchmarks.lake.session import LakeSession, literal
from benchmarks.lake.teardown import remove_lake
from benchmarks.monitor import median


def _split_insert(con: duckdb.DuckDBPyConnection, table: pa.Table, target: str) -> dict[str, float]:
    """One ``BEGIN; INSERT … BY NAME; COMMIT``, timed in two parts: on a lake the insert
    writes the Parquet files to the store, the commit writes the catalog."""
    con.register("src", table)
    started = time.perf_counter()
    con.begin()
    con.execute(f"INSERT INTO {target} BY NAME SELECT * FROM src")
    inserted = time.perf_counter()
    con.commit()
    committed = time.perf_counter()
    con.unregister("src")
    return {"insert_s": inserted - started, "commit_s": committed - inserted}


def _create_like(con: duckdb.DuckDBPyConnection, table: pa.Table, target: str) -> None:
    """Create ``target`` the way the server does (DuckDB's own Arrow type mapping)."""
    con.register("src", table.slice(0, 0))
    con.execute(f"CREATE TABLE {target} AS SELECT * FROM src LIMIT 0")
    con.unregister("src")


def lake_bulk_limit(
    con: duckdb.DuckDBPyConnection, table: pa.Table, repeats: int, scratch: Path
) -> dict[str, Any]:
    """The same rows into the lake in one transaction, after one untimed warm-up; and the
    same rows encoded as Parquet into a local file (the encoding alone, no store, no catalog)."""
    _create_like(con, table, "bulk")
    _split_insert(con, table, "bulk")
    parts = [_split_insert(con, table, "bulk") for _ in range(repeats)]
    local = scratch / "encode.parquet"
    con.register("src", table)
    encode = []
    for _ in range(repeats):
        started = time.perf_counter()
        con.execute(f"COPY (SELECT * FROM src) TO {literal(str(local))} (FORMAT parquet)")
        encode.append(time.perf_counter() - started)
    con.unregister("src")
    parquet_bytes = local.stat().st_size
    local.unlink()
    return {
        "rows": table.num_rows,
        "times_s": [p["insert_s"] + p["commit_s"] for p in parts],
        "insert_s": [p["insert_s"] for p in parts],
        "commit_s": [p["commit_s"] for p in parts],
        "local_parquet_s": encode,
        "parquet_bytes": parquet_bytes,
    }


def lake_sequential_limit(
    con: duckdb.DuckDBPyConnection, batches: list[pa.Table]
) -> dict[str, Any]:
    """Small inserts, each its own transaction, one after another (the per-commit cost)."""
    _create_like(con, batches[0], "small")
    _split_insert(con, batches[0], "small")
    parts = [_split_insert(con, batch, "small") for batch in batches]
    return {
        "batch_rows": batches[0].num_rows,
        "times_s": [p["insert_s"] + p["commit_s"] for p in parts],
        "insert_s": [p["insert_s"] for p in parts],
        "commit_s": [p["commit_s"] for p in parts],
    }


def _tiny_commits(
    settings: dict[str, Any], services: Services, table: str, commits: int
) -> dict[str, Any]:
    """A session creating ``table`` and committing one row at a time into it ``commits`` times.
    PostgreSQL's counters are read after the session closed its catalog connections."""
    schema = settings["metadata_schema"]
    before = catalog_counters(services.dsn, schema)
    with LakeSession(settings) as con:
        con.execute(f"CREATE TABLE {table} (x BIGINT)")
        times = []
        with Meter(service_pids(services), services, lake=schema) as meter:
            for i in range(commits):
                started = time.perf_counter()
                con.execute(f"INSERT INTO {table} VALUES (?)", [i])
                times.append(time.perf_counter() - started)
        files = con.execute(
            "SELECT file_count FROM ducklake_table_info('lake') WHERE table_name = ?", [table]
        ).fetchone()
    time.sleep(0.5)  # backends report their counters as they exit
    after = catalog_counters(services.dsn, schema)
    return {
        "commits": commits,
        "times_s": times,
        "inlined": files is not None and files[0] == 0,
        "catalog": {key: after[key] - before[key] for key in after},
        "usage": meter.usage,
    }


def catalog_commit_limit(
    settings: dict[str, Any], services: Services, commits: int
) -> dict[str, Any]:
    """One-row inserts, one after another, each its own commit: DuckLake keeps a row this
    small in the catalog itself (inlined), so each is a catalog commit and nothing else — the
    lake's commit rate. A second session without commits gives the catalog work of attaching, which is
    subtracted from the counters."""
    attaching = _tiny_commits(settings, services, "tiny_idle", 0)["catalog"]
    measured = _tiny_commits(settings, services, "tiny", commits)
    measured["catalog"] = {key: measured["catalog"][key] - attaching[key] for key in attaching}
    return measured


def in_process_limits(
    plan: Plan, bulk: pa.Table, small: list[pa.Table], services: Services, scratch: Path
) -> dict[str, Any]:
    """DuckDB in this process: the file target's limits, then the same on a fresh lake."""
    print("- in-process limits ...", flush=True)
    file_path = scratch / "limit.duckdb"
    limits: dict[str, Any] = {
        "file_bulk": {
            "rows": bulk.num_rows,
            "times_s": inprocess.insert_times(bulk, file_path, plan.limit_repeats),
        },
        "file_sequential": {
            "batch_rows": small[0].num_rows,
            "times_s": inprocess.sequential_small(small, file_path),
        },
    }
    for path in (file_path, file_path.with_name(file_path.name + ".wal")):
        path.unlink(missing_ok=True)
    settings = lake_config(new_lake_name("bench_limit"))["ducklake"]
    try:
        with Meter(service_pids(services), services) as meter, LakeSession(settings) as con:
            limits["lake_bulk"] = lake_bulk_limit(con, bulk, plan.limit_repeats, scratch)
        limits["lake_bulk"]["usage"] = meter.usage
        with LakeSession(settings) as con:
            limits["lake_sequential"] = lake_sequential_limit(con, small)
        limits["catalog_commits"] = catalog_commit_limit(settings, services, plan.catalog_commits)
    finally:
        remove_lake(settings, services)
    return limits


def rate(rows: int, times: list[float]) -> float:
    return rows / median(times)


def limit_figures(limits: dict[str, Any]) -> dict[str, float]:
    """rows/s (and commits/s) of every in-process limit, from the median timings."""
    lake_bulk, lake_seq = limits["lake_bulk"], limits["lake_sequential"]
    commits = limits["catalog_commits"]
    return {
        "file_bulk": rate(limits["file_bulk"]["rows"], limits["file_bulk"]["times_s"]),
        "lake_bulk": rate(lake_bulk["rows"], lake_bulk["times_s"]),
        "file_sequential": rate(
            limits["file_sequential"]["batch_rows"], limits["file_sequential"]["times_s"]
        ),
        "lake_sequential": rate(lake_seq["batch_rows"], lake_seq["times_s"]),
        "catalog_commits_per_s": 1 / median(commits["times_s"]),
    }
