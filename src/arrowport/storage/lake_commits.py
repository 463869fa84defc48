"""A lake commit the lake refuses for now, and trying it again.

Other nodes commit to the same lake: a commit can lose to theirs (a conflict, or a delivery
another node claimed first), and the catalog or the store can be out of reach for a moment.
A write that can be replayed (group-committed requests, whose data is still held) is tried
again with backoff and jitter; one that cannot (a stream already read) is answered with a
retryable error, or, when another node committed the same delivery meanwhile, as its
duplicate. A commit whose answer was lost may have landed: it is looked up by its claim
(:func:`arrowport.storage.lake_ledger.commit_claim`) before anything is tried again.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import duckdb

from arrowport.config import DuckLakeSettings
from arrowport.errors import ArrowportError, Overloaded, StorageUnavailable
from arrowport.storage.lake_catalog import CLAIM_TAKEN, catalog_lost
from arrowport.storage.writes import WriteOutcome

Answers = list[WriteOutcome | ArrowportError]


class ClaimTaken(Exception):
    """Another commit claimed a delivery of this one first (the catalog refused the commit)."""


class LakeBusy(Exception):
    """The lake refused the commit for now: a concurrent commit (``nothing_committed``: the
    lake said so before committing), or (``unreachable``) the catalog or the store could not be
    reached."""

    def __init__(
        self, message: str, unreachable: bool = False, nothing_committed: bool = False
    ) -> None:
        super().__init__(message)
        self.unreachable = unreachable
        self.nothing_committed = nothing_committed


def lake_refusal(exc: BaseException, scrub: Callable[[str], str]) -> Exception | None:
    """:class:`ClaimTaken` or :class:`LakeBusy` for a DuckDB error that is the lake refusing a
    commit for now; None for any other error."""
    text = str(exc)
    if isinstance(exc, duckdb.Error) and CLAIM_TAKEN in text:
        return ClaimTaken(text)
    if isinstance(exc, duckdb.TransactionException) and "conflict" in text.lower():
        return LakeBusy("a concurrent commit changed the same table", nothing_committed=True)
    if isinstance(exc, duckdb.IOException) or (
        isinstance(exc, duckdb.Error) and catalog_lost(text)
    ):
        lines = scrub(text).splitlines() or [type(exc).__name__]
        # The line that says what was lost, rather than DuckLake's "Failed to commit" above it.
        reason = next((line.strip() for line in lines if catalog_lost(line)), lines[0])
        return LakeBusy(f"the lake could not be reached ({reason})", unreachable=True)
    if isinstance(exc, duckdb.TransactionException) and "Failed to commit DuckLake" in text:
        # DuckLake 1.5.5 sometimes fails a CREATE OR REPLACE TABLE committed while the table is
        # being read ("schema not found in metadata catalog"); the same commit goes through
        # when tried again. DuckLake says the same of a commit whose reply it did not get.
        return LakeBusy("the lake failed this commit")
    return None


def commit_retrying(
    attempt: Callable[[], Answers],
    answers_of_refused: Callable[[], Answers | None],
    landed: Callable[[], bool],
    duplicates: Callable[[], Answers],
    settings: DuckLakeSettings,
    replayable: bool,
) -> Answers:
    """Run ``attempt`` (one transaction and its commit) until the lake takes it.

    ``answers_of_refused``: the answers an attempt that raised :class:`LakeBusy` had reached
    before its commit (None: it did not reach the commit), which are the write's should that
    commit have landed after all. ``landed``: whether any commit of this write is in the
    catalog. ``duplicates``: the answers of a write that cannot be replayed and whose
    deliveries another node committed.
    """
    unsure: Answers | None = None
    for tried in range(settings.max_retries + 1):
        started = time.monotonic()
        try:
            return attempt()
        except ClaimTaken:
            if unsure is not None and landed():
                return unsure
            if not replayable:
                return duplicates()
        except LakeBusy as exc:
            refused = answers_of_refused()
            if refused is not None:
                unsure = refused  # its commit may have landed
                if landed():
                    return unsure
            # A lake out of reach is tried again while it fails fast (a catalog restarting), not
            # after an attempt that waited on it longer than one try of a request to the store
            # may take (the store's own retries are spent by then).
            waited = time.monotonic() - started > settings.store_timeout_seconds
            last = tried == settings.max_retries or (exc.unreachable and waited)
            if not replayable or last:
                if refused is not None and not exc.nothing_committed:
                    raise StorageUnavailable(
                        f"this write's commit got no answer ({exc}) and is not in the lake's "
                        "catalog, but it may have landed, or land yet: retry with the same "
                        "idempotency key or producer sequence, which lands it at most once"
                    ) from None
                if exc.unreachable:
                    raise StorageUnavailable(
                        f"the lake could not take this commit: {exc}; retry shortly"
                    ) from None
                raise Overloaded(
                    f"the lake did not take this commit: {exc}; retry shortly", retry_after=1
                ) from None
        # Another node got there first: a moment's pause (exponential, with jitter), then again
        # — a delivery it committed is now a duplicate, seen by the ledger.
        time.sleep(random.uniform(0.5, 1.0) * min(2.0, 0.05 * 2**tried))
    raise Overloaded("the lake keeps refusing this commit; retry shortly", retry_after=1)
