"""Removing a lake the run made, so that neither the catalog nor the store keeps the run's data:
every table dropped, every snapshot expired, the lake's files and orphaned files deleted, the
object each node writes at start to check the store is writable deleted too (DuckLake's cleanup
does not know it), and the catalog's schema dropped. Every lake the benchmark creates, for the
in-process limits or for the nodes, is removed here, also when its measurement failed."""

from __future__ import annotations

import contextlib
from typing import Any

import boto3  # type: ignore[import-untyped]
import duckdb
from botocore.config import Config  # type: ignore[import-untyped]
from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]

from benchmarks.lake.services import Services, drop_catalog
from benchmarks.lake.session import LakeSession

# The object a node writes under the data path at start (arrowport.storage.lake, _probe_store).
PROBE_OBJECT = "_arrowport_probe.csv"


def remove_lake(settings: dict[str, Any], services: Services) -> None:
    """Drop every table, expire every snapshot and delete the files (so the store does not keep
    the run's data), then drop the catalog's schema."""
    with contextlib.suppress(duckdb.Error), LakeSession(settings) as con:
        tables = con.execute(
            "SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = 'lake'"
        ).fetchall()
        for schema, table in tables:
            con.execute(f'DROP TABLE lake."{schema}"."{table}"')
        con.execute("CALL ducklake_expire_snapshots('lake', older_than => now())")
        con.execute("CALL ducklake_cleanup_old_files('lake', cleanup_all => true)")
        # Files of writes that failed (a 503 after the Parquet was written) are in no snapshot.
        con.execute("CALL ducklake_delete_orphaned_files('lake', cleanup_all => true)")
    remove_probe(settings)
    drop_catalog(services.dsn, settings["metadata_schema"])


def remove_probe(settings: dict[str, Any]) -> None:
    """Delete the nodes' store probe under the lake's ``s3://bucket/prefix/`` data path, as
    far as the store lets us, like the rest of the cleanup (S3 answers a delete of a missing
    object with success: a lake no node opened has none)."""
    bucket, _, prefix = settings["data_path"].removeprefix("s3://").partition("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    scheme = "https" if settings["s3_use_ssl"] else "http"
    style = "path" if settings["s3_url_style"] == "path" else "virtual"
    client = boto3.client(
        "s3",
        endpoint_url=f"{scheme}://{settings['s3_endpoint']}",
        aws_access_key_id=settings["s3_key_id"],
        aws_secret_access_key=settings["s3_secret"],
        region_name=settings["s3_region"],
        config=Config(s3={"addressing_style": style}),
    )
    with contextlib.suppress(BotoCoreError, ClientError):
        client.delete_object(Bucket=bucket, Key=prefix + PROBE_OBJECT)
