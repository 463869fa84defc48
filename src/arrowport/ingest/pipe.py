"""A byte pipe from the event loop (HTTP body chunks) to a worker thread (the Arrow IPC reader).

The event loop :func:`pump`\\ s chunks in as they arrive and is paused while more than
``high_water`` bytes wait unread, so a large upload never sits in memory; the worker thread reads
with blocking, exact-size :meth:`BodyPipe.read` calls, which is what ``pyarrow.PythonFile`` wants.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import threading
from collections import deque
from collections.abc import AsyncIterator

from arrowport.errors import ArrowportError, PayloadTooLarge, RequestTimeout, ShuttingDown


class PipeClosed(Exception):
    """The reading side gave up; the producer should stop feeding."""


class BodyPipe(io.RawIOBase):
    def __init__(self, loop: asyncio.AbstractEventLoop, high_water: int = 16 * 1024**2) -> None:
        super().__init__()
        self._loop = loop
        self.high_water = high_water
        self._chunks: deque[bytes | memoryview] = deque()
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
            must_wait = self._buffered > max(self.high_water, self._wanted)
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
        parts = self._take(size if size is not None and size >= 0 else None)
        return b"".join(parts) if len(parts) != 1 else bytes(parts[0])

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        """Fill ``buffer`` (up to its end or the body's) straight from the chunks: no joined
        copy in between."""
        got = 0
        for part in self._take(len(buffer)):
            buffer[got : got + len(part)] = part
            got += len(part)
        return got

    def _take(self, wanted: int | None) -> list[bytes | memoryview]:
        """The next ``wanted`` bytes (all of the rest: None) as the chunks they arrived in,
        waiting for them; fewer only at the end of the body."""
        parts: list[bytes | memoryview] = []
        got = 0
        with self._cond:
            while wanted is None or got < wanted:
                if self._chunks:
                    chunk = self._chunks.popleft()
                    if wanted is not None and got + len(chunk) > wanted:
                        keep = wanted - got
                        view = memoryview(chunk)
                        self._chunks.appendleft(view[keep:])
                        chunk = view[:keep]
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
                self._wanted = wanted if wanted is not None else self.high_water
                self._need = self._wanted - got
                self._loop.call_soon_threadsafe(self._space.set)
                self._cond.wait()
                self._wanted = self._need = 0
            if self._buffered <= self.high_water // 2:
                self._loop.call_soon_threadsafe(self._space.set)
        if self.digest is not None:
            for part in parts:
                self.digest.update(part)
        return parts


class BodyPace:
    """How fast a body must arrive: its next bytes within ``timeout`` seconds, and at least
    ``min_rate`` bytes a second over every ``timeout`` seconds, so a client trickling a byte now
    and then cannot hold a writer (or memory) for ever. Time spent waiting for the server (a
    full pipe) is not the client's and does not count."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        timeout: float,
        min_rate: int,
        what: str = "the body",
    ) -> None:
        self._loop = loop
        self.timeout = timeout
        self._min_rate = min_rate
        self._what = what
        self._window_start = loop.time()
        self._window_bytes = 0

    def restart(self) -> None:
        """Start the first period now (what came before was waited for within the timeout)."""
        self._window_start = self._loop.time()
        self._window_bytes = 0

    def arrived(self, size: int) -> None:
        self._window_bytes += size
        elapsed = self._loop.time() - self._window_start
        if elapsed < self.timeout:
            return
        if self._window_bytes < self._min_rate * elapsed:
            raise RequestTimeout(
                f"{self._what} arrives slower than {self._min_rate} bytes a second "
                "(limits.min_body_bytes_per_second); giving up"
            )
        self._window_start = self._loop.time()
        self._window_bytes = 0

    def waited(self, seconds: float) -> None:
        self._window_start += seconds

    def stalled(self) -> RequestTimeout:
        return RequestTimeout(f"no body data received for {self.timeout:g} seconds; giving up")


async def receive(chunks: AsyncIterator[bytes], pace: BodyPace) -> AsyncIterator[bytes]:
    """``chunks`` as they arrive, within ``pace``."""
    loop = asyncio.get_running_loop()
    # One rescheduled deadline instead of wait_for per chunk (which costs a task each).
    try:
        async with asyncio.timeout_at(loop.time() + pace.timeout) as deadline:
            async for chunk in chunks:
                deadline.reschedule(None)
                pace.arrived(len(chunk))
                paused = loop.time()
                yield chunk
                pace.waited(loop.time() - paused)
                deadline.reschedule(loop.time() + pace.timeout)
    except TimeoutError:
        raise pace.stalled() from None


async def read_body(
    chunks: AsyncIterator[bytes], pace: BodyPace, limit: int, size_hint: int | None = None
) -> bytearray:
    """A whole body of at most ``limit`` bytes (413 beyond), read within ``pace``, into one
    buffer: of its declared size when known, else grown as it arrives (never a second copy of
    a large body)."""
    if size_hint is not None and size_hint > limit:
        raise PayloadTooLarge(
            f"body of {size_hint} bytes exceeds the limit of {limit}", limit=limit
        )
    buffer = bytearray(size_hint or 0)
    received = 0
    async for chunk in receive(chunks, pace):
        end = received + len(chunk)
        if end > limit:
            raise PayloadTooLarge(f"body exceeds the limit of {limit} bytes", limit=limit)
        buffer[received:end] = chunk  # past the declared size, this extends the buffer
        received = end
    del buffer[received:]
    return buffer


async def pump(
    chunks: AsyncIterator[bytes], pipe: BodyPipe, pace: BodyPace | None, limit: int
) -> int:
    """Feed body chunks into the pipe; returns the bytes received (413 past ``limit``: the
    decoder counts what the body decodes to, this stops a body that is too large as sent before
    it is all read). ``pace`` None: ``chunks`` are paced already (what a JSON body decodes to,
    paced as the body arrives).

    Whatever happens — the end of the body, a stalled or vanished client, or this task being
    cancelled at shutdown — the pipe is finished, so the reading thread never waits forever.
    """
    received = 0
    failure: BaseException | None = None
    try:
        async for chunk in chunks if pace is None else receive(chunks, pace):
            received += len(chunk)
            if received > limit:
                failure = PayloadTooLarge(f"body exceeds the limit of {limit} bytes", limit=limit)
                break
            await pipe.feed(chunk)
    except PipeClosed:
        pass
    except Exception as exc:  # too slow, or the client went away mid-body: the write fails
        failure = exc
    except BaseException:  # cancelled (shutdown): the write must not wait for more bytes
        failure = ShuttingDown("the server is stopping")
        raise
    finally:
        pipe.finish(failure)
    return received
