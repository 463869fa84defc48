"""The configured storage target, opened."""

from __future__ import annotations

from arrowport.config import Settings
from arrowport.storage.interface import Storage


def open_storage(settings: Settings) -> Storage:
    """The DuckDB file (``storage.target: duckdb``) or the DuckLake (``ducklake``); raises
    :class:`~arrowport.errors.StorageError` with one line saying why it cannot be opened."""
    window = settings.delivery.idempotency_window_hours
    timeout = settings.limits.query_timeout_seconds
    if settings.storage.target == "ducklake":
        from arrowport.storage.lake import Lake

        return Lake(settings.duckdb, settings.ducklake, timeout, window)
    from arrowport.storage.database import Database

    return Database(settings.duckdb, timeout, window)
