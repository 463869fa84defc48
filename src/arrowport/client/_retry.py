"""When and how long the client waits before sending a failed request again."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of transient failures: exponential backoff with jitter.

    A request that failed with a :class:`~arrowport.client.TransientError` (no answer, a
    timeout, 503 with ``Retry-After``, 502, 504, another 5xx, a write that lost to a concurrent
    one: 409 ``write_conflict``) is sent again, byte for byte, up to
    ``max_retries`` times. Before retry ``n`` (0 for the first) the client waits a random time
    between half and all of ``min(max_backoff, initial_backoff * multiplier ** n)``, and at least
    what the server asked for in ``Retry-After`` (up to ``max_backoff``: a proxy's
    ``Retry-After: 3600`` does not stall the call for hours). With the defaults the waits add up to about a
    minute: long enough to ride out a server restart.

    Retrying is always safe: ingest requests carry producer offsets, so a request that was
    committed before its answer was lost is acknowledged as a duplicate and written once; the
    other requests only read.

    Example::

        Client(url, retry=RetryPolicy(max_retries=3, initial_backoff=0.1))
        Client(url, retry=RetryPolicy(max_retries=0))   # fail on the first error
    """

    max_retries: int = 8
    initial_backoff: float = 0.5
    max_backoff: float = 30.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError("max_retries must be 0 or more")
        if self.initial_backoff < 0 or self.max_backoff < 0:
            raise ValueError("backoff times must be 0 or more")
        if self.multiplier < 1:
            raise ValueError("multiplier must be at least 1")

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (counting from 0)."""
        ceiling = min(self.max_backoff, self.initial_backoff * self.multiplier ** min(retry, 64))
        wait = random.uniform(ceiling / 2, ceiling)
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.max_backoff))
        return wait
