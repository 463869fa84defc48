"""A client-streamed call's messages as they arrive, each within a stall timeout.

A client that opens a call and then sends nothing would hold it (one of
``flight.max_concurrent_calls``, and whatever the call holds) for good; every call that reads a
client's stream (a put, a Handshake) reads it through an :class:`Arrival`, which ends such a call
DEADLINE_EXCEEDED ``request_timeout`` once ``limits.body_timeout_seconds`` pass without a
message, or, with a minimum rate (``limits.min_body_bytes_per_second``), once its messages have
come slower than that over such a period, as an HTTP body must (a few bytes every minute held a
put, and so its call, for ever). The first period starts with the first bytes counted (a put's
first batch); time between reads, when the server was not asking for the next message (DuckDB
busy writing the last ones), is not the client's and does not count.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from arrowport.errors import RequestTimeout, TruncatedStream
from arrowport.ingest.pipe import BodyPace

# gRPC's asyncio server ends a cancelled call's request stream just like a finished one, and
# reports the cancellation separately, a moment later: 0.3-0.5 ms at the median, later than 2 ms
# for ~7 % of calls, at most 3.4 ms on an idle machine (9 ms beside CPU-bound processes). So
# the end of a stream is taken for its end only this long after it came. A put commits only
# then: a cancellation reported meanwhile stops a small put on the event loop before it is
# handed to the group writer, and marks a larger one (or a Flight SQL put, read from a thread)
# as abandoned before its writer's check before the commit. (Waited on the writer's thread
# instead, the grace was hidden behind the insert, but then a cancellation later than both let
# a put cut off mid-stream commit what had come.) A call of one request whose stream ended
# without it is refused as malformed only then (a cancelled one is the client's cancellation).
CANCEL_GRACE_SECONDS = 0.003


class _StallWatch:
    """Cancels a read that has waited ``seconds``. One timer serves every read of a call: it is
    moved on only when it fires, not armed and disarmed per message (which cost a small put's
    event loop more than the reads' own bookkeeping)."""

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._reader: asyncio.Task[object] | None = None
        self._cancelling = 0
        self._since = 0.0
        self._closed = False
        self.fired = False

    def reading(self) -> None:
        """A read starts, in the current task (a call may be read from a new task each time)."""
        self._reader = asyncio.current_task(self._loop)
        assert self._reader is not None
        self._cancelling = self._reader.cancelling()
        self._since = self._loop.time()
        if self._timer is None:
            self._timer = self._loop.call_at(self._since + self._seconds, self._check)

    def now(self) -> float:
        return self._loop.time()

    def read(self) -> None:
        self._reader = None
        if self._closed:  # a read still under way when the call ended: nothing is left to watch
            self._disarm()

    def stalled(self) -> bool:
        """Whether the read that was just cancelled was cancelled by this watch alone (the
        cancellation is then taken back: the read raises the timeout instead)."""
        reader = asyncio.current_task()
        return self.fired and reader is not None and reader.uncancel() <= self._cancelling

    def close(self) -> None:
        """The call is over. A read still under way (on a thread's behalf) stays watched until
        it ends."""
        self._closed = True
        if self._reader is None:
            self._disarm()

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check(self) -> None:
        self._timer = None
        if self._reader is None:  # between reads: the next read arms the timer again
            return
        due = self._since + self._seconds
        if self._loop.time() >= due:
            self.fired = True
            self._reader.cancel()
        else:
            self._timer = self._loop.call_at(due, self._check)


class Arrival:
    """``requests``' messages, each within ``stall_seconds`` of asking for it (:meth:`next`).

    A stall raises :class:`RequestTimeout`, and a call the client cancelled (or whose connection
    broke) :class:`TruncatedStream`; their messages name the stream ``what`` ("the upload") and
    end with ``consequence`` ("nothing was written"). A reader, not an async generator: a small
    put is a few messages, and each generator layer costs the event loop as much again.
    """

    def __init__(
        self,
        requests: AsyncIterator[bytes],
        stall_seconds: float,
        what: str,
        consequence: str,
        min_rate: int = 0,
        count_messages: bool = True,
    ) -> None:
        self._requests = requests
        # Made at the first read: gRPC's request stream is a Cython async generator, which warns
        # "coroutine '_MessageReceiver._async_message_receiver' was never awaited" when dropped
        # unstarted, as a call refused before its first read (a wrong token) would drop it.
        self._source: AsyncIterator[bytes] | None = None
        self._stall_seconds = stall_seconds
        self._what = what
        self._consequence = consequence
        self._watch = _StallWatch(stall_seconds)
        loop = asyncio.get_running_loop()
        self._pace = BodyPace(loop, stall_seconds, min_rate, what) if min_rate else None
        self._count_messages = count_messages
        self._counting = False
        self._asked_at: float | None = None  # when the last message was handed over

    async def next(self) -> bytes | None:
        """The next message; None once the stream has ended."""
        watch = self._watch
        pace = self._pace
        if pace is not None and self._asked_at is not None:
            pace.waited(watch.now() - self._asked_at)  # the server's time, not the client's
        source = self._source
        if source is None:
            source = self._source = aiter(self._requests)
        watch.reading()
        try:
            message = await anext(source)
        except StopAsyncIteration:
            watch.close()
            return None
        except asyncio.CancelledError:
            if watch.stalled():
                raise self._stalled() from None
            raise
        except Exception:  # grpc.RpcError: the client cancelled or the connection broke
            if watch.stalled():  # the timeout fired as the read failed: its cancel is taken back
                raise self._stalled() from None
            raise TruncatedStream(
                f"the client cancelled {self._what}; {self._consequence}"
            ) from None
        finally:
            watch.read()
        if pace is not None:
            self._asked_at = watch.now()
            if self._count_messages:
                self.counted(len(message))
        return message

    def counted(self, size: int) -> None:
        """Count ``size`` bytes of the last message toward the minimum rate (raises
        :class:`RequestTimeout` if too little came over the last period). :meth:`next` counts
        every message whole unless the stream's reader counts what it uses itself. The first
        period starts with the first bytes counted: a client may open its call before it has
        data (the stall timeout bounds that wait)."""
        pace = self._pace
        if pace is None:
            return
        if not self._counting:
            self._counting = True
            pace.restart()
        pace.arrived(size)

    def close(self) -> None:
        """Stop watching (the call is over)."""
        self._watch.close()

    def stalled(self) -> RequestTimeout:
        """The error of a stream whose messages stopped coming, or carry nothing."""
        return self._stalled()

    def _stalled(self) -> RequestTimeout:
        return RequestTimeout(
            f"no data of {self._what} arrived for {self._stall_seconds:g} seconds; "
            f"{self._consequence}"
        )
