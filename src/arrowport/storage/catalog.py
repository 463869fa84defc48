"""Table columns, cached between the server's own schema changes.

Looking a table up in DuckDB's catalog costs about as much as a small insert, and a busy stream
looks up the same table for every request. On a DuckDB file this process is the only writer, and
every schema change it makes goes through :class:`TransactionCatalog`, so the cache is invalidated
exactly when a table changes: when the transaction that changed it ends. A lake is changed by
other nodes too: there the catalog is not cached.
"""

from __future__ import annotations

import threading

import duckdb

from arrowport.storage.identifiers import split_table
from arrowport.storage.schema import Column


def query_columns(cur: duckdb.DuckDBPyConnection, table: str) -> list[Column] | None:
    """Columns of the table named ``table`` (``schema.table`` outside main), or None."""
    return table_columns(cur, *split_table(table))


def table_columns(cur: duckdb.DuckDBPyConnection, schema: str, name: str) -> list[Column] | None:
    """Columns of ``schema``'s table ``name`` (names compared case-insensitively), or None."""
    rows = cur.execute(
        "SELECT column_name, data_type, is_nullable, column_default FROM duckdb_columns() "
        "WHERE database_name = current_database() AND lower(schema_name) = lower(?) "
        "AND lower(table_name) = lower(?) ORDER BY column_index",
        [schema, name],
    ).fetchall()
    if not rows:
        return None
    return [
        Column(name, dtype, bool(nullable), computed=_computed(default))
        for name, dtype, nullable, default in rows
    ]


def _computed(default: str | None) -> bool:
    """Whether a column's ``column_default`` fills it in (DuckLake says 'NULL' for none)."""
    return default is not None and default.strip().upper() != "NULL"


class TableCatalog:
    """Committed columns per table (keys folded to lower case, as DuckDB compares names).

    A lookup runs outside the lock, so a schema change may commit (and invalidate) while it is
    under way; its answer may then predate the change. Each invalidation bumps the table's
    generation, and a lookup stores its answer only if the generation did not move meanwhile.
    """

    def __init__(self, cached: bool = True) -> None:
        # Off where other processes change the tables too (a lake shared by many nodes).
        self._cached = cached
        self._lock = threading.Lock()
        self._columns: dict[str, list[Column]] = {}
        # One counter per table ever invalidated: bounded by the tables this server changed.
        self._generations: dict[str, int] = {}

    def load(self, cur: duckdb.DuckDBPyConnection, table: str) -> list[Column] | None:
        """Columns of ``table`` as committed; call outside a transaction (fills the cache)."""
        key = table.lower()
        with self._lock:
            cached = self._columns.get(key)
            if cached is not None:
                return cached
            generation = self._generations.get(key, 0)
        columns = query_columns(cur, table)
        if columns is not None and self._cached:
            with self._lock:
                if self._generations.get(key, 0) == generation:
                    self._columns[key] = columns
        return columns

    def cached(self, table: str) -> list[Column] | None:
        with self._lock:
            return self._columns.get(table.lower())

    def invalidate(self, tables: set[str]) -> None:
        with self._lock:
            for table in tables:
                key = table.lower()
                self._columns.pop(key, None)
                self._generations[key] = self._generations.get(key, 0) + 1


class TransactionCatalog:
    """The catalog as one transaction sees it: cached, except tables it has changed itself."""

    def __init__(self, catalog: TableCatalog, cur: duckdb.DuckDBPyConnection) -> None:
        self.catalog = catalog
        self.cur = cur
        self.changed: set[str] = set()

    def columns(self, table: str) -> list[Column] | None:
        if table.lower() not in self.changed:
            cached = self.catalog.cached(table)
            if cached is not None:
                return cached
        return query_columns(self.cur, table)

    def mark_changed(self, table: str) -> None:
        self.changed.add(table.lower())

    def close(self) -> None:
        """The transaction ended (committed or not): forget what it may have changed."""
        self.catalog.invalidate(self.changed)
