"""A put's IPC messages between the gRPC reader and DuckDB, in bounded memory.

gRPC would size a stream's receive window from its bandwidth-delay estimate, which under a busy
DuckDB can reach hundreds of MB (the server fixes it instead: ``flight.receive_window_bytes``).
Either way the handler should not leave frames waiting in gRPC: it drains them as fast as they
arrive and hands their messages to DuckDB, on another thread, through a :class:`MessageSpool`:
up to ``memory_bytes`` of messages wait in memory, and any more in a file on disk (framed as an
Arrow IPC stream), read back when DuckDB gets to them. Memory stays flat for any upload size and
any client speed.

Spill files are named ``arrowport-put-<pid>-*.arrows``; :func:`remove_orphans` deletes those of
processes that are gone (a server killed mid-put) when a server starts.

Example::

    with MessageSpool(memory_bytes=32 * 1024**2) as spool:
        # producer thread           # consumer thread
        spool.put(message)          for message in spool: ...
        spool.finish()              # (or spool.fail(exc): the consumer raises exc)
"""

from __future__ import annotations

import contextlib
import os
import re
import struct
import tempfile
import threading
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import structlog

from arrowport.errors import InsufficientStorage, StorageError, is_disk_full
from arrowport.ingest.ipc_messages import CONTINUATION, Message, PayloadLimits
from arrowport.ingest.ipc_stream import stream_messages

log = structlog.get_logger(__name__)

_PREFIX = "arrowport-put-"
_ORPHAN_RE = re.compile(rf"^{_PREFIX}(?:(\d+)-)?[^/]*\.arrows$")
# Messages read back were admitted on their way in; these limits only frame the file.
_READ_BACK = PayloadLimits(2**62, 2**62, 2**31)


class MessageSpool:
    """A first-in, first-out queue of IPC messages from one producer thread to one consumer
    thread; at most ``memory_bytes`` of them wait in memory (one always may), the rest on disk."""

    def __init__(self, memory_bytes: int, directory: str | None = None) -> None:
        self._memory_bytes = memory_bytes
        self._directory = directory
        self._cond = threading.Condition()
        # A message in memory with its size, or (None, 0): the next message of the spill file.
        self._queue: deque[tuple[Message | None, int]] = deque()
        self._in_memory = 0
        self._finished = False
        self._failure: BaseException | None = None
        self._sink: IO[bytes] | None = None
        self._source: IO[bytes] | None = None
        self._spilled: Iterator[Message] | None = None
        self._path: str | None = None
        self.spilled_messages = 0

    # -- producer ------------------------------------------------------------------------------

    def put(self, message: Message) -> None:
        size = len(message.metadata) + message.body_length
        with self._cond:
            spill = self._in_memory > 0 and self._in_memory + size > self._memory_bytes
        if spill:
            self._spill(message)
            entry: tuple[Message | None, int] = (None, 0)
        else:
            entry = (message, size)
        with self._cond:
            self._in_memory += entry[1]
            self._queue.append(entry)
            self._cond.notify_all()

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

    def _spill(self, message: Message) -> None:
        try:
            if self._sink is None:
                fd, self._path = tempfile.mkstemp(
                    prefix=f"{_PREFIX}{os.getpid()}-", suffix=".arrows", dir=self._directory
                )
                self._sink = os.fdopen(fd, "wb")
            metadata = bytes(message.metadata)
            metadata += b"\x00" * (-len(metadata) % 8)
            self._sink.write(CONTINUATION + struct.pack("<i", len(metadata)) + metadata)
            if message.body_length:
                self._sink.write(message.body)
            # Whole messages only: once queued, the consumer's own handle reads this one.
            self._sink.flush()
        except OSError as exc:
            where = self._directory or tempfile.gettempdir()
            if is_disk_full(exc):
                raise InsufficientStorage(f"no room left in {where} to spool the upload") from exc
            raise StorageError(f"cannot spool the upload in {where}: {exc}") from exc
        self.spilled_messages += 1

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
                self._in_memory -= size
            yield self._read_spilled() if message is None else message

    def _read_spilled(self) -> Message:
        try:
            if self._spilled is None:
                assert self._path is not None
                self._source = open(self._path, "rb", buffering=0)  # noqa: SIM115 (closed below)
                self._spilled = stream_messages(self._source, _READ_BACK, require_end=False)
            return next(self._spilled)
        except (OSError, StopIteration, StorageError) as exc:
            raise StorageError(f"cannot read back the spooled upload: {exc}") from exc

    # -- lifecycle -----------------------------------------------------------------------------

    def close(self) -> None:
        """Delete the spill file. Call once both threads are done with the spool; never raises
        (the upload's own outcome, success or error, is what the client must hear)."""
        self._spilled = None
        try:
            for handle in (self._sink, self._source):
                if handle is not None:
                    with contextlib.suppress(OSError):
                        handle.close()
        finally:
            self._sink = self._source = None
            if self._path is not None:
                with contextlib.suppress(OSError):
                    Path(self._path).unlink(missing_ok=True)
                self._path = None

    def __enter__(self) -> MessageSpool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def remove_orphans(directory: str | None) -> int:
    """Delete spill files left by servers that died mid-put; returns how many went."""
    where = Path(directory or tempfile.gettempdir())
    removed = 0
    try:
        candidates = list(where.glob(f"{_PREFIX}*.arrows"))
    except OSError:
        return 0
    for path in candidates:
        match = _ORPHAN_RE.match(path.name)
        if match is None:
            continue
        pid = int(match[1]) if match[1] else None
        if pid is not None and (pid == os.getpid() or _alive(pid)):
            continue
        with contextlib.suppress(OSError):
            path.unlink()
            removed += 1
    if removed:
        log.info("removed spill files of servers that stopped mid-put", files=removed)
    return removed
