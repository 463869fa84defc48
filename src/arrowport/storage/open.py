"""The configured storage target, opened."""

from __future__ import annotations

import structlog

from arrowport.config import Settings
from arrowport.storage.engine import Engine
from arrowport.storage.interface import Storage
from arrowport.storage.memory_guard import (
    BUFFER_HEADROOM_BYTES,
    MemoryGuard,
    default_limit,
    usable_bytes,
)

log = structlog.get_logger("arrowport.storage")

# How often a lake's delivery state is expired (one node at a time), maintenance or not.
EXPIRY_SECONDS = 600.0


def open_storage(settings: Settings, scheduled: bool = True) -> Storage:
    """The DuckDB file (``storage.target: duckdb``) or the DuckLake (``ducklake``); raises
    :class:`~arrowport.errors.StorageError` with one line saying why it cannot be opened.
    ``scheduled``: with the lake's periodic maintenance and the guard of the server's memory
    (a server), or without (a command)."""
    window = settings.delivery.idempotency_window_hours
    timeout = settings.limits.query_timeout_seconds
    storage = _open(settings, scheduled, window, timeout)
    if scheduled:
        guard = memory_guard(settings, storage.buffer_limit_bytes())
        if guard is not None:
            storage.memory_guard = guard
            storage.on_close(guard.close)
    return storage


def memory_guard(settings: Settings, buffers: int) -> MemoryGuard | None:
    """The server's guard of its memory while queries run (None: ``0``, or a system that does
    not say how much memory there is, or where a process cannot read its own). ``buffers``:
    DuckDB's ``memory_limit``, which its buffers keep after queries."""
    limit = settings.limits.max_server_memory_bytes
    if limit is None:
        limit = default_limit(settings.api.workers, buffers)
    elif limit and limit < buffers + BUFFER_HEADROOM_BYTES:
        log.warning(
            "limits.max_server_memory_bytes leaves little room above duckdb.memory_limit: "
            "once DuckDB's buffers fill, queries will be stopped",
            limit_bytes=limit,
            memory_limit_bytes=buffers,
        )
    if not limit:
        return None
    usable = usable_bytes()
    if usable is not None and limit >= usable:
        log.warning(
            "limits.max_server_memory_bytes is at or above the memory the process may use: "
            "the system will end the process before queries are stopped for it (lower "
            "duckdb.memory_limit, or set limits.max_server_memory_bytes)",
            limit_bytes=limit,
            usable_bytes=usable,
        )
    try:
        return MemoryGuard(limit)
    except OSError:  # no /proc: resident memory cannot be read
        log.warning("the server cannot read its own memory: queries are not stopped for it")
        return None


def _open(settings: Settings, scheduled: bool, window: float, timeout: float | None) -> Engine:
    if settings.storage.target == "ducklake":
        from arrowport.storage.background import Periodic
        from arrowport.storage.lake import Lake
        from arrowport.storage.maintenance import scheduled_expiry, scheduled_maintenance

        lake = Lake(settings.duckdb, settings.ducklake, timeout, window)
        if scheduled:
            tasks = [("arrowport-lake-expiry", EXPIRY_SECONDS, lambda: scheduled_expiry(lake))]
            interval = settings.ducklake.maintenance_interval_seconds
            if interval is not None:
                tasks.append(
                    (
                        "arrowport-lake-maintenance",
                        interval,
                        lambda: scheduled_maintenance(lake, lake.maintenance),
                    )
                )
            for name, every, task in tasks:
                lake.on_close(Periodic(name, every, task, lake.scrub).stop)
        return lake
    from arrowport.storage.database import Database

    return Database(settings.duckdb, timeout, window)
