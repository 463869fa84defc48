"""Opening a DuckLake: its extensions from their pinned packages, the S3 secret, the ``ATTACH``,
a probe that the data path can be written, and the internal tables every node needs."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from pathlib import Path

import duckdb

from arrowport.config import DuckLakeSettings
from arrowport.errors import StorageError
from arrowport.storage.identifiers import INTERNAL_SCHEMA, quote
from arrowport.storage.lake_catalog import CatalogLocation
from arrowport.storage.lake_ledger import SCHEMA_SQL

LAKE = "lake"
# Upserts take turns cluster-wide by updating this row (see the lake module).
UPSERT_GUARD = f"{quote(INTERNAL_SCHEMA)}.upsert_turn"


def read_secret(value: str | None, path: str | None, what: str) -> str | None:
    if value is not None or path is None:
        return value
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise StorageError(f"cannot read {what} from {path}: {exc.strerror}") from None


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def load_extensions(
    root: duckdb.DuckDBPyConnection, location: CatalogLocation, data_path: str
) -> None:
    """Loads the lake's extensions from their ``duckdb-extension-*`` packages (never
    downloaded)."""
    import duckdb_extensions

    wanted = ["ducklake"]
    if location.kind in ("postgres", "sqlite"):
        wanted.append(location.kind)
    if data_path.startswith("s3://"):
        wanted.append("httpfs")
    for name in wanted:
        duckdb_extensions.import_extension(name, con=root)
        root.execute(f"LOAD {name}")


def attach(
    root: duckdb.DuckDBPyConnection, location: CatalogLocation, lake: DuckLakeSettings
) -> None:
    """Attaches the lake as ``lake`` and makes it the default catalog."""
    data_path = lake.data_path or ""
    if data_path.startswith("s3://"):
        secret = read_secret(lake.s3_secret, lake.s3_secret_file, "ducklake.s3_secret")
        parts = [
            "TYPE s3",
            f"REGION {_literal(lake.s3_region)}",
            f"URL_STYLE {_literal(lake.s3_url_style)}",
            f"USE_SSL {'true' if lake.s3_use_ssl else 'false'}",
        ]
        if lake.s3_endpoint:
            parts.append(f"ENDPOINT {_literal(lake.s3_endpoint)}")
        if lake.s3_key_id:
            parts.append(f"KEY_ID {_literal(lake.s3_key_id)}")
        if secret:
            parts.append(f"SECRET {_literal(secret)}")
        root.execute(f"CREATE SECRET arrowport_s3 ({', '.join(parts)})")
        # GLOBAL: every cursor is a connection of its own, and a SET without it is not seen
        # there (DuckDB's defaults, 30 s and 3 retries a request, let a hung store hold a
        # write for minutes).
        root.execute(f"SET GLOBAL http_timeout = {int(lake.store_timeout_seconds)}")
        root.execute(f"SET GLOBAL http_retries = {int(lake.store_retries)}")
    else:
        Path(data_path).mkdir(parents=True, exist_ok=True)
    options = [f"DATA_PATH {_literal(data_path)}"]
    if lake.metadata_schema:
        options.append(f"METADATA_SCHEMA {_literal(lake.metadata_schema)}")
    if lake.data_inlining_row_limit is not None:
        options.append(f"DATA_INLINING_ROW_LIMIT {int(lake.data_inlining_row_limit)}")
    path = _literal(f"ducklake:{location.attach_path}")
    root.execute(f"ATTACH {path} AS {LAKE} ({', '.join(options)})")
    root.execute(f"USE {LAKE}")


def probe_path(data_dir: str) -> str:
    """A small object every node writes at start: read to learn whether the store answers."""
    return os.path.join(data_dir, "_arrowport_probe.csv")


def probe_store(
    root: duckdb.DuckDBPyConnection, data_dir: str, scrub: Callable[[str], str]
) -> None:
    """Fail at start, not at the first write, when the data path cannot be written (a wrong
    endpoint, bucket or key). Every node overwrites the same small object."""
    try:
        root.execute(f"COPY (SELECT 1 AS ok) TO {_literal(probe_path(data_dir))} (FORMAT csv)")
    except duckdb.Error as exc:
        reason = scrub(str(exc)).splitlines()[0]
        raise StorageError(f"cannot write to the lake's data path: {reason}") from None


def prepare(root: duckdb.DuckDBPyConnection) -> None:
    """The internal schema, the delivery tables and the upsert guard row (nodes starting
    together may race to create them: a refused commit is tried again)."""
    statements = [
        f"CREATE SCHEMA IF NOT EXISTS {quote(INTERNAL_SCHEMA)}",
        *SCHEMA_SQL,
        f"CREATE TABLE IF NOT EXISTS {UPSERT_GUARD} (turn BIGINT NOT NULL)",
        f"INSERT INTO {UPSERT_GUARD} SELECT 0 WHERE NOT EXISTS (FROM {UPSERT_GUARD})",
    ]
    for statement in statements:
        for attempt in range(20):
            try:
                root.execute(statement)
                break
            except duckdb.TransactionException:
                time.sleep(random.uniform(0.05, 0.2) * (attempt + 1))
        else:
            raise StorageError("cannot prepare the lake: its catalog keeps refusing commits")
