"""Whether the files a lake commit wrote are still in the store.

DuckLake 1.5.5 deletes the Parquet files a transaction wrote whenever its commit fails, and a
commit PostgreSQL carried out but whose reply was lost is a failure to it: the catalog then
lists files that are gone, and every read of the table fails. A node learns of such a commit by
its claim (:mod:`arrowport.storage.lake_commits`); :func:`lost_files` then looks for the files
that commit added, so that the write is not answered as landed when its rows cannot be read.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import duckdb

from arrowport.storage.identifiers import split_table


def lost_files(
    cur: duckdb.DuckDBPyConnection, lake: str, tables: Iterable[str], snapshot: int
) -> list[str]:
    """The data and delete files that ``snapshot`` added to ``tables`` and that the store does
    not have."""
    missing: list[str] = []
    for name in sorted(set(tables)):
        schema, table = split_table(name)
        added = _files(cur, lake, schema, table, snapshot)
        added -= _files(cur, lake, schema, table, snapshot - 1)
        missing += [path for path in sorted(added) if not _exists(cur, path)]
    return missing


def _files(
    cur: duckdb.DuckDBPyConnection, lake: str, schema: str, table: str, snapshot: int
) -> set[str]:
    try:
        rows = cur.execute(
            "SELECT data_file, delete_file FROM ducklake_list_files("
            "?, ?, schema => ?, snapshot_version => ?)",
            [lake, table, schema, snapshot],
        ).fetchall()
    except duckdb.CatalogException:  # the table did not exist at that snapshot
        return set()
    return {path for row in rows for path in row if path is not None}


def _exists(cur: duckdb.DuckDBPyConnection, path: str) -> bool:
    if "://" not in path:
        return os.path.exists(path)
    # Its footer, read from the store: DuckDB's glob takes a path without wildcards for one
    # that exists, and a count can be answered from the catalog's statistics.
    try:
        cur.execute("SELECT count(*) FROM parquet_file_metadata(?)", [path]).fetchall()
    except duckdb.HTTPException as exc:
        if getattr(exc, "status_code", None) == 404:
            return False
        raise  # the store did not say: the files could not be checked
    return True
