"""The database's background work: checkpoints, so no write pays for one, and housekeeping.

DuckDB checkpoints automatically when its write-ahead log passes a threshold, inside the commit
that crossed it: with many small writes, that one commit (and every write group-committed with
it) waits tens of milliseconds. Instead, DuckDB's own threshold is raised to a backstop and this
thread checkpoints on a cursor of its own whenever the WAL passes ``wal_bytes``; DuckDB lets
commits proceed meanwhile.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from pathlib import Path

import duckdb
import structlog

log = structlog.get_logger(__name__)


class Checkpointer:
    def __init__(
        self,
        connect: Callable[[], duckdb.DuckDBPyConnection],
        wal_path: Path,
        wal_bytes: int,
        interval: float = 0.5,
    ) -> None:
        self._connect = connect
        self._wal_path = wal_path
        self._wal_bytes = wal_bytes
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="arrowport-checkpoint", daemon=True)
        self._thread.start()

    def _wal_size(self) -> int:
        try:
            return self._wal_path.stat().st_size
        except OSError:
            return 0

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            if self._wal_size() < self._wal_bytes:
                continue
            try:
                cur = self._connect()
            except Exception:  # the database is closing
                return
            try:
                cur.execute("CHECKPOINT")
            except duckdb.Error as exc:  # retried next round; writes go on regardless
                log.info("background checkpoint skipped", reason=str(exc))
            finally:
                with contextlib.suppress(duckdb.Error):
                    cur.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class Periodic:
    """Runs ``task`` every ``interval`` seconds on a thread of its own until stopped; a failure
    is logged (through ``scrub``) and the task runs again next time (housekeeping must never
    stop for good)."""

    def __init__(
        self,
        name: str,
        interval: float,
        task: Callable[[], object],
        scrub: Callable[[str], str] = str,
    ) -> None:
        self._interval = interval
        self._task = task
        self._scrub = scrub  # what a failure's text must not show (paths, credentials)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._task()
            except Exception as exc:
                reason = self._scrub(str(exc))
                log.info("housekeeping skipped", task=self._thread.name, reason=reason)

    def stop(self, wait: float | None = None) -> None:
        """Stop, waiting for a task that is running (at most ``wait`` seconds)."""
        self._stop.set()
        self._thread.join(wait)
