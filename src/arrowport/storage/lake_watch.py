"""Whether the lake's catalog and object store answer, for ``/ready``.

A service that refuses connections fails a request at once, but one that hangs (an overloaded
or frozen server, a network that drops packets) is noticed only when a request times out, and a
readiness check must answer at once. So each is asked by one thread at a time, and ``/ready``
reports the last answer — or a question that has waited longer than the service may take.
The catalog is asked by ``/ready`` itself (a stuck question holds one thread, not one per
call); the store in the background, one HEAD of a small object every few seconds (a request to
the store is billed).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable

import duckdb
import structlog

log = structlog.get_logger(__name__)

STORE_CHECK_SECONDS = 5.0
# An HTTP status below this is the store answering (a missing probe, a key that may write but
# not read): only silence, a refused connection or a server error is a store out of reach.
_SERVER_ERROR = 500


class Watch:
    """The last answer of ``ask`` (None: no problem), and whether a question is overdue."""

    def __init__(self, what: str, ask: Callable[[], str | None], patience: float) -> None:
        self._what = what
        self._ask = ask
        self._patience = patience
        self._lock = threading.Lock()
        self._asked_at: float | None = None  # when the question in flight was asked
        self._problem: str | None = None

    def check(self) -> None:
        """Ask now, unless a question is already in flight (one that hangs is not repeated)."""
        with self._lock:
            if self._asked_at is not None:
                return
            self._asked_at = time.monotonic()
        problem = self._problem  # kept should the question itself fail
        try:
            problem = self._ask()
        finally:
            with self._lock:
                self._asked_at = None
                was, self._problem = self._problem, problem
            if problem != was and (problem is None or was is None):
                if problem is None:
                    log.info("lake service answers again", service=self._what)
                else:
                    log.warning("lake service out of reach", service=self._what, reason=problem)

    def problem(self) -> str | None:
        """Why the service cannot be relied on now (None: it answered when last asked)."""
        with self._lock:
            asked_at, problem = self._asked_at, self._problem
        if asked_at is not None and time.monotonic() - asked_at > self._patience:
            return f"{self._what} has not answered for {time.monotonic() - asked_at:.0f} s"
        return problem


def ask_store(
    connect: Callable[[], duckdb.DuckDBPyConnection],
    what: str,
    probe: str,
    scrub: Callable[[str], str],
) -> str | None:
    """Whether the store answers a HEAD of ``probe`` (any answer below 500 will do)."""
    try:
        cur = connect()
    except Exception:  # the database is closing
        return None
    try:
        cur.execute("SELECT size FROM read_blob(?)", [probe]).fetchall()
    except duckdb.Error as exc:
        status = (
            getattr(exc, "status_code", None) if isinstance(exc, duckdb.HTTPException) else None
        )
        if isinstance(status, int) and 0 < status < _SERVER_ERROR:
            return None
        reason = scrub(str(exc)).splitlines()[0]
        return f"{what} cannot be reached ({reason})"
    finally:
        with contextlib.suppress(duckdb.Error):
            cur.close()
    return None
