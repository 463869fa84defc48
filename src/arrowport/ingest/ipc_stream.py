"""Arrow IPC streams as messages, and messages as a stream again.

:func:`stream_messages` cuts a byte stream (an HTTP body, a file) into
:class:`~arrowport.ingest.ipc_messages.Message` s, refusing oversized or truncated ones before
reading their bodies; :class:`CheckedStream` serves admitted messages back to
``pa.ipc.open_stream`` as a file, each body as the very buffer it arrived in (no copy).
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterable, Iterator
from typing import Protocol

from arrowport.errors import InvalidIPC, PayloadTooLarge, TruncatedStream
from arrowport.ingest.body_buffers import BODY_BUFFERS, POOLED_BYTES
from arrowport.ingest.ipc_messages import (
    CONTINUATION,
    END_OF_STREAM,
    LEGACY_END,
    Message,
    PayloadBudget,
    PayloadLimits,
)

# What an Arrow IPC file (Feather v2) starts with: the stream format inside it comes after.
FILE_MAGIC = b"ARROW1"


class Readable(Protocol):
    """Anything with a ``read(size)`` (a file, a pipe, a decompressor)."""

    def read(self, size: int = ..., /) -> bytes | memoryview | None: ...


def read_exact(raw: Readable, size: int) -> bytes | memoryview:
    """``size`` bytes from ``raw`` (fewer only at its end), as one buffer."""
    first = raw.read(size) or b""
    if len(first) == size or not first:
        return first
    buffer = bytearray(size)
    buffer[: len(first)] = first
    got = len(first)
    while got < size:
        chunk = raw.read(size - got)
        if not chunk:
            return memoryview(buffer)[:got]
        buffer[got : got + len(chunk)] = chunk
        got += len(chunk)
    return memoryview(buffer)


def read_body(raw: Readable, size: int) -> bytes | memoryview:
    """A message body of ``size`` bytes (fewer only at the end of ``raw``): a large one read
    straight into a pooled block (:mod:`arrowport.ingest.body_buffers`), unless ``raw`` says
    that its reads are buffers of their own (views of memory that holds the body already, or
    freshly decoded bytes: a copy would gain nothing)."""
    readinto = getattr(raw, "readinto", None)
    if size < POOLED_BYTES or readinto is None or getattr(raw, "reads_own_buffers", False):
        return read_exact(raw, size)

    def fill(target: memoryview) -> int:
        got = 0
        while got < len(target):
            count = readinto(target[got:])
            if not count:
                break
            got += count
        return got

    return BODY_BUFFERS.filled(size, fill)


def stream_messages(
    raw: Readable, limits: PayloadLimits, require_end: bool = True
) -> Iterator[Message]:
    """The messages of an Arrow IPC stream read from ``raw``, up to its end-of-stream marker.

    The stream must end with that marker, and nothing may follow it: a producer that died
    between two batches otherwise looks exactly like one that finished. (``require_end=False``
    reads messages this process wrote, up to the end of ``raw``.)
    """
    count = 0
    while True:
        prefix = read_exact(raw, 8)
        if not prefix and not require_end:
            return
        if count == 0 and not prefix:
            raise TruncatedStream(
                "the Arrow IPC stream is empty (an empty body, or an empty batch.data in "
                "JSON): send its schema, any record batches and its end-of-stream marker"
            )
        if count == 0 and bytes(prefix[:6]) == FILE_MAGIC:
            raise InvalidIPC(
                "the body is in the Arrow IPC file format (Feather v2: it starts with ARROW1), "
                "not the stream format: send an IPC stream (pyarrow: pa.ipc.new_stream, not "
                "pa.ipc.new_file or feather.write_feather)"
            )
        if count == 0 and bytes(prefix[:4]) != CONTINUATION[: len(prefix[:4])]:
            raise InvalidIPC(
                "the body is not an Arrow IPC stream (it does not start with an IPC message)"
            )
        if len(prefix) == 4 and bytes(prefix) == LEGACY_END:
            break
        if len(prefix) < 8:
            raise TruncatedStream(
                "the Arrow IPC stream ended without its end-of-stream marker: the producer may "
                f"have stopped early (after {max(count - 1, 0)} messages); nothing was written. "
                "Close the IPC writer before sending."
            )
        if bytes(prefix[:4]) != CONTINUATION:
            raise InvalidIPC("an Arrow IPC message does not start with the continuation marker")
        length = struct.unpack_from("<i", prefix, 4)[0]
        if length == 0:
            break
        if length < 0 or length > limits.max_message_bytes:
            raise PayloadTooLarge(
                f"an Arrow IPC message's metadata declares {length} bytes",
                limit=limits.max_message_bytes,
            )
        metadata = read_exact(raw, length)
        if len(metadata) < length:
            raise TruncatedStream("the Arrow IPC stream is cut short inside a message")
        message = Message.parse(metadata)
        if message.body_length > limits.max_message_bytes:
            raise PayloadTooLarge(
                f"an Arrow IPC message has a body of {message.body_length} bytes, above the "
                f"limit of {limits.max_message_bytes} (limits.max_message_bytes): send smaller "
                "batches",
                limit=limits.max_message_bytes,
            )
        body = read_body(raw, message.body_length) if message.body_length else b""
        if len(body) < message.body_length:
            raise TruncatedStream("the Arrow IPC stream is cut short inside a message body")
        count += 1
        yield message.with_body(body)
    if raw.read(1):
        raise InvalidIPC("unexpected bytes after the Arrow IPC end-of-stream marker")


class ViewReader(io.RawIOBase):
    """Reads a buffer in memory as views of it (no copies)."""

    reads_own_buffers = True

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        super().__init__()
        self._view = memoryview(data)
        self._position = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> memoryview:
        end = len(self._view) if size is None or size < 0 else self._position + size
        piece = self._view[self._position : end]
        self._position += len(piece)
        return piece


class ByteCollector:
    """A write-only file for pyarrow's IPC writer that hands back what was written since the
    last :meth:`take`."""

    closed = False

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


def _framed(message: Message) -> list[bytes | memoryview]:
    """``message`` as the pieces of its IPC encapsulation: marker and length, metadata padded
    to 8 bytes, body."""
    metadata = message.metadata
    padding = -len(metadata) % 8
    if padding:
        metadata = bytes(metadata) + b"\x00" * padding
    pieces = [CONTINUATION + struct.pack("<i", len(metadata)), metadata]
    if message.body_length:
        pieces.append(message.body)
    return pieces


def checked_stream_bytes(messages: Iterable[Message], budget: PayloadBudget) -> bytes:
    """What :class:`CheckedStream` would serve of ``messages``, every message admitted first, as
    one buffer: for a small payload, which pyarrow then decodes without a call back into
    Python per read."""
    pieces: list[bytes | memoryview] = []
    for message in messages:
        budget.admit(message)
        pieces += _framed(message)
    pieces.append(END_OF_STREAM)
    return b"".join(pieces)


class CheckedStream(io.RawIOBase):
    """A read-only file of an Arrow IPC stream, for ``pa.ipc.open_stream``: the messages of
    ``messages``, each admitted by ``budget`` before any of its bytes is served, then the
    end-of-stream marker. A body is served as the buffer it came in, so pyarrow's batches
    point into it instead of into a copy."""

    def __init__(self, messages: Iterator[Message], budget: PayloadBudget) -> None:
        super().__init__()
        self._messages = messages
        self._budget = budget
        self._pieces: list[bytes | memoryview] = []
        self._ended = False

    def readable(self) -> bool:
        return True

    def _refill(self) -> bool:
        if self._ended:
            return False
        message = next(self._messages, None)
        if message is None:
            self._ended = True
            self._pieces = [END_OF_STREAM]
            return True
        self._budget.admit(message)
        self._pieces = _framed(message)
        return True

    def read(self, size: int | None = -1) -> bytes | memoryview:
        if size is None or size < 0:
            raise io.UnsupportedOperation("read a checked IPC stream in pieces")
        parts: list[bytes | memoryview] = []
        wanted = size
        while wanted > 0:
            if not self._pieces and not self._refill():
                break
            piece = self._pieces[0]
            if len(piece) <= wanted:
                self._pieces.pop(0)
                parts.append(piece)
                wanted -= len(piece)
            else:
                view = memoryview(piece)
                parts.append(view[:wanted])
                self._pieces[0] = view[wanted:]
                wanted = 0
        if len(parts) == 1:
            return parts[0]
        return b"".join(parts)

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)
