"""The test services a lake lives on — PostgreSQL for the catalog, an S3-compatible server for
the data — as the benchmark sees them: their connection string and server processes (to watch
their CPU), and the catalog queries it needs: a lake's commit count, PostgreSQL's counters for
a lake's catalog tables, and dropping a lake's catalog schema. Without the ``ARROWPORT_TEST_*``
variables the run stops here with one line saying how to start the services."""

from __future__ import annotations

import dataclasses
import os
import re

import psycopg
from tests.lake import SERVICE_VARIABLES

from arrowport.storage.lake_catalog import CatalogLocation
from benchmarks.lake.procfs import listener_pid


@dataclasses.dataclass(frozen=True)
class Services:
    dsn: str  # libpq, with Arrowport's connection defaults
    postgres_pid: int | None
    s3_pid: int | None


def services() -> Services:
    """The test services' PostgreSQL and S3 server; exits with one line when they are not set."""
    missing = [name for name in SERVICE_VARIABLES if not os.environ.get(name)]
    if missing:
        raise SystemExit(
            f"benchmarks.lake: {', '.join(missing)} unset — start the test services "
            "(.venv/bin/python scripts/test_services.py start) and load them "
            "(set -a; . .services/env; set +a)"
        )
    dsn = CatalogLocation.parse("postgres:" + os.environ["ARROWPORT_TEST_PG_DSN"]).target
    pg_port = re.search(r"\bport=(\d+)", dsn)
    s3_port = os.environ["ARROWPORT_TEST_S3_ENDPOINT"].rpartition(":")[2]
    return Services(
        dsn=dsn,
        postgres_pid=listener_pid(int(pg_port.group(1))) if pg_port else None,
        s3_pid=listener_pid(int(s3_port)) if s3_port.isdigit() else None,
    )


def service_pids(services: Services) -> dict[str, int | None]:
    return {"postgres": services.postgres_pid, "s3": services.s3_pid}


def snapshot_count(dsn: str, schema: str) -> int:
    """Commits the lake has taken: rows of its catalog's snapshot table."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(f'SELECT count(*) FROM "{schema}".ducklake_snapshot').fetchone()
        return int(row[0]) if row else 0


def catalog_counters(dsn: str, schema: str) -> dict[str, int]:
    """PostgreSQL's counters: commits of the whole database (other users included), and table
    scans and row writes on this lake's catalog tables only. A backend reports them when it is
    idle or exits, so read them after the lake's connections closed."""
    with psycopg.connect(dsn) as conn:
        xacts = conn.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
        tables = conn.execute(
            "SELECT coalesce(sum(coalesce(seq_scan, 0) + coalesce(idx_scan, 0)), 0), "
            "coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0) "
            "FROM pg_stat_user_tables WHERE schemaname = %s",
            [schema],
        ).fetchone()
    return {
        "xact_commit": int(xacts[0]) if xacts else 0,
        "catalog_scans": int(tables[0]) if tables else 0,
        "catalog_row_writes": int(tables[1]) if tables else 0,
    }


def drop_catalog(dsn: str, schema: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
