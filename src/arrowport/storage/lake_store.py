"""Whether the lake's object store answers, for ``/ready``.

A store that refuses connections fails a request at once, but one that hangs (an overloaded or
frozen server, a network that drops packets) is noticed only when a request times out, and the
readiness check must answer at once. So the store is asked in the background, one small request
(a HEAD of the object every node writes at start) every few seconds, and ``/ready`` reports the
last answer — or a question that has waited longer than the store may take.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable

import duckdb

from arrowport.storage.background import Periodic

CHECK_SECONDS = 5.0
_NOT_FOUND = 404


class StoreWatch:
    """Asks the store every :data:`CHECK_SECONDS` on a thread of its own until stopped."""

    def __init__(
        self,
        connect: Callable[[], duckdb.DuckDBPyConnection],
        probe: str,
        patience: float,
        scrub: Callable[[str], str],
    ) -> None:
        self._connect = connect
        self._probe = probe
        self._patience = patience
        self._scrub = scrub
        self._lock = threading.Lock()
        self._asked_at: float | None = None  # when the question in flight was asked
        self._problem: str | None = None  # the last answer's, if it was one
        self._periodic = Periodic("arrowport-lake-store", CHECK_SECONDS, self.check, scrub)

    def check(self) -> None:
        with self._lock:
            self._asked_at = time.monotonic()
        problem = self._ask()
        with self._lock:
            self._asked_at = None
            self._problem = problem

    def _ask(self) -> str | None:
        try:
            cur = self._connect()
        except Exception:  # the database is closing
            return None
        try:
            cur.execute("SELECT size FROM read_blob(?)", [self._probe]).fetchall()
        except duckdb.HTTPException as exc:
            # Not found is an answer (the probe was deleted); any other status is a refusal.
            if getattr(exc, "status_code", None) == _NOT_FOUND:
                return None
            return self._reason(exc)
        except duckdb.Error as exc:
            return self._reason(exc)
        finally:
            with contextlib.suppress(duckdb.Error):
                cur.close()
        return None

    def _reason(self, exc: duckdb.Error) -> str:
        return self._scrub(str(exc)).splitlines()[0]

    def problem(self) -> str | None:
        """Why the store cannot be relied on now (None: it answered when last asked)."""
        with self._lock:
            asked_at, problem = self._asked_at, self._problem
        if asked_at is not None and time.monotonic() - asked_at > self._patience:
            waited = time.monotonic() - asked_at
            return f"the lake's object store has not answered for {waited:.0f} s"
        if problem is not None:
            return f"the lake's object store cannot be reached ({problem})"
        return None

    def stop(self) -> None:
        self._periodic.stop()
