"""Who may start a write now: the server's capacity, shared fairly.

* **Memory**: bodies held in memory (small bodies buffered whole, JSON bodies, a streamed body's
  pipe) count against ``limits.max_inflight_bytes``; what a body merely declares does not, so a
  client announcing a huge upload and then trickling it holds nothing it does not use.
* **Streaming writers**: ``limits.max_streaming_writes`` at once, of which one token holds at
  most ``limits.max_streaming_writes_per_client``: a slow or greedy client cannot take every
  writer. (Without authentication every caller is the same anonymous one, so only the global
  limit applies.)
* **Draining**: once the server stops, new writes get 503 ``shutting_down``; running ones finish.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Iterator

from arrowport.config import LimitsSettings
from arrowport.errors import Overloaded, ShuttingDown


class Admission:
    def __init__(self, limits: LimitsSettings) -> None:
        self._limits = limits
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._accepting = True
        self._drained_at: float | None = None
        self._inflight_bytes = 0
        self._streaming = 0
        self._by_client: Counter[str] = Counter()

    # -- draining ------------------------------------------------------------------------------

    @property
    def accepting(self) -> bool:
        return self._accepting

    def check_accepting(self) -> None:
        """503 ``shutting_down`` once the server drains (a write already running may finish)."""
        if not self._accepting:
            raise ShuttingDown("the server is shutting down; retry later")

    def drain(self) -> None:
        with self._lock:
            if self._accepting:
                self._accepting = False
                self._drained_at = time.monotonic()

    def wait_idle(self, timeout: float, at_least: float = 0.0) -> bool:
        """Wait until no streaming write runs, until ``timeout`` seconds after draining began
        (the shutdown's one deadline) but ``at_least`` this long; False if some still ran."""
        with self._lock:
            deadline = (self._drained_at or time.monotonic()) + timeout
            left = max(at_least, deadline - time.monotonic())
            return self._idle.wait_for(lambda: self._streaming == 0, timeout=left)

    # -- memory --------------------------------------------------------------------------------

    @property
    def inflight_bytes(self) -> int:
        """Bytes held in memory now, counted against ``limits.max_inflight_bytes``."""
        return self._inflight_bytes

    @contextlib.contextmanager
    def holding(self, size: int) -> Iterator[None]:
        """Count ``size`` bytes held in memory while the block runs (503 over the budget; a
        single body larger than the whole budget still runs when nothing else is held)."""
        with self.reserving() as held:
            held.grow(size)
            yield

    @contextlib.contextmanager
    def reserving(self) -> Iterator[Reservation]:
        """A count of bytes held in memory, grown as a body is buffered (see
        :meth:`Reservation.grow`), given back when the block ends."""
        held = Reservation(self)
        try:
            yield held
        finally:
            held.release()

    def admit_bytes(self, size: int, own: int) -> None:
        """Count ``size`` more bytes for a holder of ``own`` bytes already (see
        :meth:`Reservation.grow`)."""
        limit = self._limits.max_inflight_bytes
        with self._lock:
            if self._inflight_bytes + size > limit and self._inflight_bytes > own:
                raise Overloaded(
                    "too many bytes are being received right now; retry shortly",
                    retry_after=1,
                    limit=limit,
                )
            self._inflight_bytes += size

    def release_bytes(self, size: int) -> None:
        with self._lock:
            self._inflight_bytes -= size

    # -- streaming writers ---------------------------------------------------------------------

    @property
    def streaming(self) -> int:
        """Streaming-writer slots taken now, of ``limits.max_streaming_writes``."""
        return self._streaming

    def take_stream(self, client: str | None) -> None:
        """Take a streaming-writer slot for ``client`` (503 when none is free for it); give it
        back with :meth:`give_stream`."""
        limits = self._limits
        with self._lock:
            if self._streaming >= limits.max_streaming_writes:
                raise Overloaded(
                    "all streaming writers are busy; retry shortly",
                    retry_after=1,
                    limit=limits.max_streaming_writes,
                )
            if client is not None and self._by_client[client] >= (
                limits.max_streaming_writes_per_client
            ):
                raise Overloaded(
                    "this client already runs as many streaming writes as it may; retry once "
                    "one has finished",
                    retry_after=1,
                    limit=limits.max_streaming_writes_per_client,
                )
            self._streaming += 1
            if client is not None:
                self._by_client[client] += 1

    def give_stream(self, client: str | None) -> None:
        with self._lock:
            self._streaming -= 1
            if client is not None:
                self._by_client[client] -= 1
                if not self._by_client[client]:
                    del self._by_client[client]
            self._idle.notify_all()


class Reservation:
    """Bytes one body holds in memory, counted against ``limits.max_inflight_bytes``."""

    def __init__(self, admission: Admission) -> None:
        self._admission = admission
        self.size = 0

    def grow(self, size: int) -> None:
        """Count ``size`` more bytes (503 ``overloaded`` when they pass the budget while other
        bodies hold some of it; one body alone may pass it)."""
        self._admission.admit_bytes(size, self.size)
        self.size += size

    def release(self) -> None:
        self._admission.release_bytes(self.size)
        self.size = 0
