"""A put's IPC messages between the gRPC reader and DuckDB, in bounded memory.

A large put is read on one thread and written by DuckDB on another; between them, a
:class:`PutBuffer` holds up to ``memory_bytes`` of messages (one always fits, however large).
When it is full the reader waits for DuckDB to take one, and so stops reading the call: gRPC's
flow-control window (fixed at ``flight.receive_window_bytes``) then holds the client back, as a
TCP window holds back an HTTP upload. A put's memory is therefore the buffer plus the window,
whatever its size and however fast its client.

(Puts used to be drained as fast as they arrived, the excess written to a temporary file and
read back: that cost a 10M-row put a tenth of its speed, in writing and parsing every message
twice, and bought nothing once gRPC's window was fixed.)

Example::

    buffer = PutBuffer(memory_bytes=8 * 1024**2)
    # reader thread               # DuckDB's thread
    buffer.put(message)           for message in buffer: ...
    buffer.finish()               # (buffer.stop() if it ends early)
    # (or buffer.fail(exc): the consumer raises exc)
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator

from arrowport.ingest.ipc_messages import Message


class PutBuffer:
    """A first-in, first-out queue of IPC messages from one producer thread to one consumer
    thread; the producer waits while ``memory_bytes`` of them are queued (one always fits)."""

    def __init__(self, memory_bytes: int, waited: Callable[[float], object] | None = None) -> None:
        """``waited``: told the seconds of each wait for room, as it ends."""
        self._memory_bytes = memory_bytes
        self._waited = waited
        self._cond = threading.Condition()
        self._queue: deque[tuple[Message, int]] = deque()
        self._queued_bytes = 0
        self._finished = False
        self._stopped = False
        self._failure: BaseException | None = None
        self.waited_seconds = 0.0

    # -- producer ------------------------------------------------------------------------------

    def put(self, message: Message) -> bool:
        """Queue ``message``, first waiting for room; False (nothing queued) if the consumer
        has stopped meanwhile."""
        size = len(message.metadata) + message.body_length
        with self._cond:
            if self._full(size):
                started = time.monotonic()
                while self._full(size):
                    self._cond.wait()
                seconds = time.monotonic() - started
                self.waited_seconds += seconds
                if self._waited is not None:
                    self._waited(seconds)
            if self._stopped:
                return False
            self._queued_bytes += size
            self._queue.append((message, size))
            self._cond.notify_all()
            return True

    def _full(self, size: int) -> bool:
        return (
            not self._stopped
            and self._queued_bytes > 0
            and self._queued_bytes + size > self._memory_bytes
        )

    def finish(self) -> None:
        """No more messages: the consumer ends after the queued ones."""
        with self._cond:
            self._finished = True
            self._cond.notify_all()

    def fail(self, exc: BaseException) -> None:
        """The upload failed: the consumer raises ``exc`` at its next message."""
        with self._cond:
            self._failure = exc
            self._cond.notify_all()

    # -- consumer ------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Message]:
        while True:
            with self._cond:
                while not self._queue and not self._finished and self._failure is None:
                    self._cond.wait()
                if self._failure is not None:
                    raise self._failure
                if not self._queue:
                    return
                message, size = self._queue.popleft()
                self._queued_bytes -= size
                self._cond.notify_all()
            yield message

    def stop(self) -> None:
        """The consumer takes no more (it finished, or failed): a waiting producer goes on, and
        what is queued is dropped."""
        with self._cond:
            self._stopped = True
            self._queue.clear()
            self._queued_bytes = 0
            self._cond.notify_all()
