"""Lake maintenance: fewer, larger files and a bounded history, safe while other nodes write.

In order, as DuckLake's own ``CHECKPOINT`` would: rows inlined in the catalog are written to
Parquet, adjacent small files merged, snapshots older than ``ducklake.expire_snapshots_after``
expired, then files no snapshot needs any more deleted once older than
``ducklake.delete_files_after`` (younger ones may still be read by a running query), and
orphaned files likewise. Flushing and merging do not conflict with concurrent inserts; a step the
lake refuses for now is tried again. Idempotency keys past their window are forgotten too.

One node at a time: :func:`maintenance_turn` holds a lock in the catalog's own database for the
run (:func:`~arrowport.storage.lake_catalog.catalog_lock`).
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

import duckdb
import structlog

from arrowport.storage.lake import Lake
from arrowport.storage.lake_catalog import catalog_lock, expire_claims
from arrowport.storage.lake_figures import MaintenanceRecorder, lake_counts
from arrowport.storage.lake_ledger import LakeLedger
from arrowport.storage.lake_open import LAKE

log = structlog.get_logger(__name__)
T = TypeVar("T")

_ATTEMPTS = 10
_LOCK_KEY = 8301548
# The steps after which DuckLake drops the schema versions it has cached.
_DROPPING = {"flush_inlined_data", "expire_snapshots"}
_EXPIRY_LOCK_KEY = 8301549
# Commit claims only need to outlive the retries of their own write.
COMMIT_CLAIM_HOURS = 1.0


@dataclass
class MaintenanceReport:
    files_before: int = 0
    files_after: int = 0
    snapshots_before: int = 0
    snapshots_after: int = 0
    keys_expired: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {
            "files_before": self.files_before,
            "files_after": self.files_after,
            "snapshots_before": self.snapshots_before,
            "snapshots_after": self.snapshots_after,
            "keys_expired": self.keys_expired,
            "seconds": {step: round(s, 3) for step, s in self.seconds.items()},
        }


def _retried(work: Callable[[], T]) -> T:
    """``work`` again while the lake refuses it for a concurrent commit (ingest goes on)."""
    for attempt in range(_ATTEMPTS):
        try:
            return work()
        except duckdb.TransactionException:
            if attempt == _ATTEMPTS - 1:
                raise
            time.sleep(random.uniform(0.5, 1.0) * min(2.0, 0.1 * 2**attempt))
    raise AssertionError("unreachable")


def _step(cur: duckdb.DuckDBPyConnection, sql: str, parameters: list[str] | None = None) -> None:
    # Read as Arrow, not as Python objects: the expired snapshots' TIMESTAMPTZ column would need
    # pytz, which is not installed, so every run with a snapshot to expire failed.
    _retried(lambda: cur.execute(sql, parameters).to_arrow_table())


def expire_delivery_state(lake: Lake) -> int:
    """Forget idempotency keys past their window, keep each producer's last sequence only, and
    forget the claims the lake's records now answer for; returns the keys forgotten."""
    hours = lake.idempotency_window_hours
    with lake.cursor() as cur:
        ledger = LakeLedger(cur, LAKE)
        forgotten = _retried(lambda: ledger.expire(hours))
        _retried(ledger.compact)
    expire_claims(lake.location, lake.settings.metadata_schema, hours, COMMIT_CLAIM_HOURS)
    return forgotten


def maintain(lake: Lake) -> MaintenanceReport:
    """Run every maintenance step once (see the module's description)."""
    settings = lake.settings
    report = MaintenanceReport()
    steps = [
        ("flush_inlined_data", f"CALL ducklake_flush_inlined_data('{LAKE}')", None),
        ("merge_adjacent_files", f"CALL ducklake_merge_adjacent_files('{LAKE}')", None),
        (
            "expire_snapshots",
            f"CALL ducklake_expire_snapshots('{LAKE}', older_than => now() - ?::INTERVAL)",
            [settings.expire_snapshots_after],
        ),
        (
            "cleanup_old_files",
            f"CALL ducklake_cleanup_old_files('{LAKE}', older_than => now() - ?::INTERVAL)",
            [settings.delete_files_after],
        ),
        (
            "delete_orphaned_files",
            f"CALL ducklake_delete_orphaned_files('{LAKE}', older_than => now() - ?::INTERVAL)",
            [settings.delete_files_after],
        ),
    ]
    with lake.cursor() as cur:
        report.files_before, report.snapshots_before = lake_counts(cur)
    for name, sql, parameters in steps:
        started = time.perf_counter()
        # A step that drops cached schema versions waits for the writes that reshape a table
        # (taken before the cursor's own turn: see arrowport.storage.lake_turns).
        dropping = lake.dropping_schemas() if name in _DROPPING else contextlib.nullcontext()
        with dropping, lake.cursor(long=True) as cur:
            _step(cur, sql, parameters)
        report.seconds[name] = time.perf_counter() - started
    started = time.perf_counter()
    report.keys_expired = expire_delivery_state(lake)
    report.seconds["expire_idempotency_keys"] = time.perf_counter() - started
    with lake.cursor() as cur:
        report.files_after, report.snapshots_after = lake_counts(cur)
    with contextlib.suppress(Exception):  # the figures are refreshed on their own schedule too
        lake.measure()
    return report


@contextlib.contextmanager
def maintenance_turn(lake: Lake) -> Iterator[bool]:
    """Whether this node may maintain the lake now (True while it holds the turn)."""
    with catalog_lock(lake.location, _LOCK_KEY, lake.settings.metadata_schema, wait=False) as mine:
        yield mine


def scheduled_expiry(lake: Lake) -> None:
    """Delivery state's periodic expiry (every node schedules it; one runs it at a time)."""
    with catalog_lock(
        lake.location, _EXPIRY_LOCK_KEY, lake.settings.metadata_schema, wait=False
    ) as mine:
        if mine:
            expire_delivery_state(lake)


def scheduled_maintenance(lake: Lake, record: MaintenanceRecorder) -> None:
    """One scheduled run: maintain if no other node is at it."""
    with maintenance_turn(lake) as mine:
        if not mine:
            return
        started = time.perf_counter()
        try:
            report = maintain(lake)
        except Exception as exc:
            record.ran("failed", time.perf_counter() - started)
            reason = lake.scrub(str(exc))
            log.warning("lake maintenance failed; tried again next time", reason=reason)
            return
        record.ran("ok", time.perf_counter() - started)
        log.info("lake maintained", **report.to_json())
