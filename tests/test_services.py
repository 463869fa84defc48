"""The test services (`scripts/test_services.py`, started by `make unit`) are up and usable.

These fail, not skip, without the ARROWPORT_TEST_* variables: the services are part of the test
command, and a lake test that silently skipped would hide a broken setup.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import duckdb
import duckdb_extensions
import psycopg

NAMES = ("PG_DSN", "S3_ENDPOINT", "S3_BUCKET", "S3_KEY_ID", "S3_SECRET", "S3_REGION")


def service_env() -> dict[str, str]:
    missing = [f"ARROWPORT_TEST_{n}" for n in NAMES if not os.environ.get(f"ARROWPORT_TEST_{n}")]
    assert not missing, (
        f"{missing} not set: run the tests with `make unit` (it starts the services)"
    )
    return {n: os.environ[f"ARROWPORT_TEST_{n}"] for n in NAMES}


def test_postgres_answers() -> None:
    with psycopg.connect(service_env()["PG_DSN"], connect_timeout=10) as conn:
        conn.execute("CREATE TEMP TABLE t (k text PRIMARY KEY)")
        conn.execute("INSERT INTO t VALUES ('a')")
        assert conn.execute("SELECT k FROM t").fetchall() == [("a",)]


def test_duckdb_writes_and_reads_s3(tmp_path: Path) -> None:
    env = service_env()
    # Extensions come from their PyPI packages into a private directory; nothing is downloaded.
    con = duckdb.connect(
        config={
            "extension_directory": str(tmp_path / "extensions"),
            "autoinstall_known_extensions": "false",
            "autoload_known_extensions": "false",
        }
    )
    duckdb_extensions.import_extension("httpfs", con=con)
    con.execute("LOAD httpfs")
    con.execute(
        "CREATE SECRET (TYPE s3, KEY_ID $1, SECRET $2, REGION $3, ENDPOINT $4,"
        " URL_STYLE 'path', USE_SSL false)",
        [env["S3_KEY_ID"], env["S3_SECRET"], env["S3_REGION"], env["S3_ENDPOINT"]],
    )
    url = f"s3://{env['S3_BUCKET']}/smoke/{uuid.uuid4().hex}.parquet"
    con.execute(f"COPY (SELECT range AS i FROM range(100)) TO '{url}'")
    assert con.execute(f"SELECT count(*), sum(i) FROM '{url}'").fetchone() == (100, 4950)
