"""A byte pipe from the event loop (HTTP body chunks) to a worker thread (the Arrow IPC reader).

The event loop :meth:`BodyPipe.feed`\\ s chunks as they arrive and is paused while more than
``high_water`` bytes wait unread, so a large upload never sits in memory; the worker thread reads
with blocking, exact-size :meth:`BodyPipe.read` calls, which is what ``pyarrow.PythonFile`` wants.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import threading
from collections import deque

from arrowport.errors import ArrowportError


class PipeClosed(Exception):
    """The reading side gave up; the producer should stop feeding."""


class BodyPipe(io.RawIOBase):
    def __init__(self, loop: asyncio.AbstractEventLoop, high_water: int = 16 * 1024**2) -> None:
        super().__init__()
        self._loop = loop
        self._high_water = high_water
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._cond = threading.Condition()
        self._eof = False
        self._failure: BaseException | None = None
        self._aborted = False
        # Bytes the reader is blocked waiting for: one IPC message may exceed the high-water
        # mark, and the producer must then be let past it or both would wait forever.
        self._wanted = 0
        # Bytes the blocked reader still lacks: it is woken once they are all buffered (or at
        # the end), not for every chunk — each wake-up costs a GIL hand-off with the event loop,
        # which stalled the first few MiB of a body by ~40 ms.
        self._need = 0
        self._space = asyncio.Event()
        self._space.set()
        # Set to a hash object to fingerprint the raw body (idempotency keys), off the event loop.
        self.digest: hashlib._Hash | None = None

    # -- producer side (event loop) ------------------------------------------------------------

    async def feed(self, chunk: bytes) -> None:
        if self._aborted:
            raise PipeClosed
        if not chunk:
            return
        with self._cond:
            self._chunks.append(chunk)
            self._buffered += len(chunk)
            if self._buffered >= self._need:
                self._cond.notify()
            must_wait = self._buffered > max(self._high_water, self._wanted)
            if must_wait:
                self._space.clear()
        if must_wait:
            await self._space.wait()
            if self._aborted:
                raise PipeClosed

    def finish(self, failure: BaseException | None = None) -> None:
        """No more bytes: end of body, or the client went away (``failure``)."""
        with self._cond:
            self._eof = True
            self._failure = failure
            self._cond.notify_all()

    # -- consumer side (worker thread) ---------------------------------------------------------

    def readable(self) -> bool:
        return True

    def abort(self) -> None:
        """The reader is done (or failed): release the producer and drop what is buffered."""
        with self._cond:
            self._aborted = True
            self._chunks.clear()
            self._buffered = 0
        self._loop.call_soon_threadsafe(self._space.set)

    def read(self, size: int | None = -1) -> bytes:
        wanted = size if size is not None and size >= 0 else None
        parts: list[bytes] = []
        got = 0
        with self._cond:
            while wanted is None or got < wanted:
                if self._chunks:
                    chunk = self._chunks.popleft()
                    if wanted is not None and got + len(chunk) > wanted:
                        keep = wanted - got
                        self._chunks.appendleft(chunk[keep:])
                        chunk = chunk[:keep]
                    parts.append(chunk)
                    got += len(chunk)
                    self._buffered -= len(chunk)
                    continue
                if self._eof:
                    if self._failure is not None:
                        failure = self._failure
                        raise (
                            failure
                            if isinstance(failure, ArrowportError)
                            else OSError(str(failure))
                        )
                    break
                self._wanted = wanted if wanted is not None else self._high_water
                self._need = self._wanted - got
                self._loop.call_soon_threadsafe(self._space.set)
                self._cond.wait()
                self._wanted = self._need = 0
            if self._buffered <= self._high_water // 2:
                self._loop.call_soon_threadsafe(self._space.set)
        data = b"".join(parts) if len(parts) != 1 else parts[0]
        if self.digest is not None:
            self.digest.update(data)
        return data

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)
