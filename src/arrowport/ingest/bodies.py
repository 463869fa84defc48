"""Request bodies held in memory, and how each is read as an Arrow IPC payload.

* :class:`BytesBody` — an IPC stream as it was sent (a small binary body, a small JSON payload
  once decoded), possibly compressed; uncompressed, its batches point into it.
* :class:`Base64Body` — the base64 text of an IPC stream inside a large JSON body that had to be
  read whole (see :mod:`arrowport.ingest.seed_json`), decoded a message at a time as the payload
  is read, so that the decoded stream is never held whole beside the body.
"""

from __future__ import annotations

import binascii
import hashlib
import io
from typing import Protocol

import pybase64

from arrowport.errors import InvalidBase64
from arrowport.ingest.ipc_messages import PayloadLimits
from arrowport.ingest.payload import Codec, IpcPayload, decompressing_reader, sniff_codec


class Body(Protocol):
    """A whole payload in memory. ``len()`` is its size as IPC bytes (compressed, if it is)."""

    codec: Codec | None
    # Its batches can be read whole (a table) without copying them.
    in_memory: bool

    def __len__(self) -> int: ...

    def payload(self, limits: PayloadLimits, chunk_size: int, max_rows: int | None) -> IpcPayload:
        """The payload, read from the start (once)."""
        ...

    def digest(self) -> str:
        """SHA-256 of the IPC bytes, for the idempotency fingerprint."""
        ...


class BytesBody:
    def __init__(self, data: bytes | bytearray | memoryview, codec: Codec | None) -> None:
        self.data = data
        self.codec = codec
        self.in_memory = codec is None

    def __len__(self) -> int:
        return len(self.data)

    def payload(self, limits: PayloadLimits, chunk_size: int, max_rows: int | None) -> IpcPayload:
        if self.codec is None:
            return IpcPayload.from_bytes(self.data, limits, chunk_size, max_rows)
        # Decompressed as it is read: a small compressed body may expand enormously.
        source = decompressing_reader(io.BytesIO(self.data), self.codec)
        return IpcPayload.from_file(source, limits, chunk_size, max_rows)

    def digest(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


# Base64 text hashed per step (a multiple of 4 characters).
_DIGEST_STEP = 4 * 1024**2


class Base64Body:
    """The base64 text of ``batch.data``, as a view of the JSON body it arrived in.

    Invalid base64 is a 400 ``invalid_base64`` as it is met (the write fails and rolls back);
    its length is checked at once.
    """

    in_memory = False

    def __init__(self, text: memoryview) -> None:
        if len(text) % 4:
            raise InvalidBase64(
                f"batch.data is not valid base64: its length ({len(text)}) is not a multiple of 4"
            )
        self.text = text
        padding = 2 - len(bytes(text[-2:]).rstrip(b"=")) if text else 0
        self._size = len(text) // 4 * 3 - padding
        self.codec = sniff_codec(decode_base64(text, 0, min(len(text), 8)))

    def __len__(self) -> int:
        return self._size

    def payload(self, limits: PayloadLimits, chunk_size: int, max_rows: int | None) -> IpcPayload:
        reader = Base64Reader(self.text, self._size)
        if self.codec is None:
            return IpcPayload.from_file(reader, limits, chunk_size, max_rows)
        source = decompressing_reader(reader, self.codec)  # type: ignore[arg-type]
        return IpcPayload.from_file(source, limits, chunk_size, max_rows)

    def digest(self) -> str:
        digest = hashlib.sha256()
        for start in range(0, len(self.text), _DIGEST_STEP):
            digest.update(decode_base64(self.text, start, start + _DIGEST_STEP))
        return digest.hexdigest()


def decode_base64(text: memoryview, start: int, end: int) -> bytes:
    """Characters ``start:end`` of ``text`` (whole 4-character groups) decoded; padding is
    allowed only at the very end of ``text``, as if it had been decoded at once."""
    end = min(end, len(text))
    try:
        if end < len(text) and text[end - 1] == ord("="):
            raise ValueError("padding before the end of the data")
        return pybase64.b64decode(text[start:end], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidBase64(f"batch.data is not valid base64: {exc}") from None


class Base64Reader(io.RawIOBase):
    """Reads the bytes ``text`` encodes, decoding only the characters each read needs."""

    reads_own_buffers = True  # each read decodes into a fresh buffer: never copy it again

    def __init__(self, text: memoryview, size: int) -> None:
        super().__init__()
        self._text = text
        self._size = size
        self._position = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes | memoryview:
        start = self._position
        end = self._size if size is None or size < 0 else min(self._size, start + size)
        if end <= start:
            return b""
        first, last = start // 3, -(-end // 3)  # the 3-byte groups the read overlaps
        decoded = decode_base64(self._text, first * 4, last * 4)
        self._position = end
        skip = start - first * 3
        if skip == 0:
            return memoryview(decoded)[: end - start]
        # A copy, so that the bytes start aligned: Arrow's buffers point into them, and DuckDB
        # reads misaligned buffers slowly (with a warning each).
        return decoded[skip : skip + end - start]

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)
