"""Turning request bytes into checked Arrow record batches.

An :class:`IpcPayload` reads an Arrow IPC stream batch by batch and refuses to pretend a cut
stream is whole: the stream must end with its end-of-stream marker (a producer that died between
batches otherwise looks exactly like one that finished). It also slices batches to ``chunk_size``
rows, enforces the row limit and keeps the first error it raised, because DuckDB wraps errors
raised inside its Arrow scan into its own exception.
"""

from __future__ import annotations

import gzip
import io
import zlib
from collections.abc import Callable, Iterator
from typing import IO, Literal

import pyarrow as pa
import zstandard

from arrowport.errors import (
    ArrowportError,
    InvalidCompression,
    InvalidIPC,
    PayloadTooLarge,
    TruncatedStream,
    UnsupportedMediaType,
)

Codec = Literal["zstd", "gzip", "lz4"]

_EOS = b"\xff\xff\xff\xff\x00\x00\x00\x00"
_LEGACY_EOS = b"\x00\x00\x00\x00"
# Every IPC message written since Arrow 0.15 (2019) starts with this continuation marker.
_CONTINUATION = b"\xff\xff\xff\xff"
_MAGIC: dict[bytes, Codec] = {
    b"\x28\xb5\x2f\xfd": "zstd",
    b"\x04\x22\x4d\x18": "lz4",
    b"\x1f\x8b": "gzip",
}


def sniff_codec(head: bytes) -> Codec | None:
    """The compression framing ``head`` starts with, if any (an IPC stream starts 0xFFFFFFFF)."""
    for magic, codec in _MAGIC.items():
        if head.startswith(magic):
            return codec
    return None


def content_encoding_codec(header: str | None) -> Codec | None:
    value = (header or "").strip().lower()
    if value in ("", "identity"):
        return None
    if value in ("zstd", "gzip", "x-gzip"):
        return "gzip" if value == "x-gzip" else value  # type: ignore[return-value]
    raise UnsupportedMediaType(
        f"unsupported Content-Encoding {header!r}: use zstd, gzip or none",
        content_encoding=header,
    )


def decompressing_reader(raw: IO[bytes], codec: Codec) -> IO[bytes]:
    """A file object that yields the decompressed bytes of ``raw``."""
    if codec == "zstd":
        return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
    if codec == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    return pa.CompressedInputStream(pa.PythonFile(raw, mode="r"), "lz4")  # type: ignore[no-any-return]


class LimitedReader(io.RawIOBase):
    """Counts bytes read from ``raw``; past ``limit`` the request is too large."""

    def __init__(self, raw: IO[bytes], limit: int) -> None:
        super().__init__()
        self._raw = raw
        self._limit = limit
        self.position = 0
        self._head = b""
        self._tail = b""

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def head(self) -> bytes:
        """The first bytes read (up to 4)."""
        return self._head

    def tail(self, count: int) -> bytes:
        return self._tail[-count:]

    def read(self, size: int | None = -1) -> bytes:
        if size is not None and size > self._limit - self.position + 8:
            # A declared message length beyond what the body may hold: corrupt or hostile.
            raise PayloadTooLarge(
                f"an IPC message of {size} bytes does not fit the body limit of {self._limit}",
                limit=self._limit,
            )
        data = _read_exact(self._raw, size)
        self.position += len(data)
        if self.position > self._limit:
            raise PayloadTooLarge(
                f"payload exceeds the limit of {self._limit} bytes", limit=self._limit
            )
        if len(self._head) < 4:
            self._head = (self._head + data[:4])[:4]
        self._tail = (self._tail + data[-8:])[-8:]
        return data


def _read_exact(raw: IO[bytes], size: int | None) -> bytes:
    if size is None or size < 0:
        return raw.read()
    parts = []
    got = 0
    while got < size:
        chunk = raw.read(size - got)
        if not chunk:
            break
        parts.append(bytes(chunk))
        got += len(chunk)
    return b"".join(parts)


def _ipc_error(exc: BaseException, head: bytes | None = None) -> ArrowportError:
    """Map a decoding failure to its client error. ``head`` (the first bytes of the payload) is
    given while the schema is read: a body that does not start like an IPC message is not an
    IPC stream at all, so it is ``invalid_ipc``, not a cut stream."""
    if isinstance(exc, ArrowportError):
        return exc
    text = str(exc)
    if isinstance(exc, zstandard.ZstdError | zlib.error | EOFError | gzip.BadGzipFile):
        return InvalidCompression(f"body is not valid compressed data: {text}")
    if head is not None and not head.startswith(_CONTINUATION[: len(head)]):
        return InvalidIPC(
            "body is not an Arrow IPC stream (it does not start with an IPC message): " + text
        )
    if "Expected to be able to read" in text or "Expected to read" in text:
        return TruncatedStream(f"Arrow IPC stream is cut short: {text}")
    return InvalidIPC(f"not a valid Arrow IPC stream: {text}")


def _validate(batch: pa.RecordBatch, number: int) -> None:
    """Check every offset, index and UTF-8 string before DuckDB scans the batch.

    A corrupt but well-framed batch (an out-of-range dictionary index, an offset past its buffer)
    would otherwise be read out of bounds, and can crash the process. Costs ~4 ms per million rows.
    """
    try:
        batch.validate(full=True)
    except (pa.ArrowException, ValueError) as exc:
        raise InvalidIPC(f"record batch {number} is not valid Arrow data: {exc}") from None


class BatchStream:
    """Batches from any source, counted, limited and sliced to ``chunk_size`` rows.

    Keeps the first error it raised in ``error``: DuckDB wraps exceptions raised inside its
    Arrow scan, and the caller wants to answer with the original one.
    """

    def __init__(
        self,
        schema: pa.Schema,
        batches: Iterator[pa.RecordBatch],
        chunk_size: int,
        max_rows: int | None = None,
    ) -> None:
        self.schema = schema
        self._batches = batches
        self._chunk_size = chunk_size
        self._max_rows = max_rows
        self.rows = 0
        self.batches = 0
        self.error: ArrowportError | None = None
        self._started = False

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        if self._started:
            # A second pass would see an exhausted source and silently write nothing.
            raise RuntimeError("a batch stream can be read only once")
        self._started = True
        try:
            for batch in self._batches:
                self.batches += 1
                self.rows += batch.num_rows
                _validate(batch, self.batches)
                if self._max_rows is not None and self.rows > self._max_rows:
                    raise PayloadTooLarge(
                        f"request carries more than {self._max_rows} rows", limit=self._max_rows
                    )
                if batch.num_rows <= self._chunk_size:
                    yield batch
                else:
                    for offset in range(0, batch.num_rows, self._chunk_size):
                        yield batch.slice(offset, self._chunk_size)
        except ArrowportError as exc:
            self.error = exc
            raise

    def drain(self) -> None:
        """Read the stream to its end unless it was read already (to fingerprint its bytes)."""
        if not self._started:
            for _ in self:
                pass

    def reader(self) -> pa.RecordBatchReader:
        return pa.RecordBatchReader.from_batches(self.schema, iter(self))

    def read_all(self) -> pa.Table:
        return pa.Table.from_batches(list(self), schema=self.schema)


class IpcPayload:
    """Batches of one Arrow IPC stream, checked as they are read.

    ``source`` is a pyarrow file; ``position`` and ``tail`` report how far it has been read and
    the last bytes read, so the end-of-stream marker can be verified without buffering.
    """

    def __init__(
        self,
        source: pa.NativeFile,
        position: Callable[[], int],
        tail: Callable[[int], bytes],
        at_end: Callable[[], bool],
        chunk_size: int,
        max_rows: int | None = None,
        head: Callable[[], bytes] | None = None,
    ) -> None:
        self._position = position
        self._tail = tail
        self._at_end = at_end
        try:
            self._reader = pa.ipc.open_stream(source)
        except (pa.ArrowException, OSError, ValueError, zstandard.ZstdError, EOFError) as exc:
            raise _ipc_error(exc, head() if head is not None else None) from None
        self.stream = BatchStream(self._reader.schema, self._messages(), chunk_size, max_rows)

    @classmethod
    def from_bytes(
        cls, data: bytes | pa.Buffer, chunk_size: int, max_rows: int | None = None
    ) -> IpcPayload:
        buffer = pa.py_buffer(data) if isinstance(data, bytes) else data
        source = pa.BufferReader(buffer)
        return cls(
            source,
            position=source.tell,
            tail=lambda n: buffer.slice(
                max(source.tell() - n, 0), min(n, source.tell())
            ).to_pybytes(),
            at_end=lambda: source.tell() == buffer.size,
            chunk_size=chunk_size,
            max_rows=max_rows,
            head=lambda: buffer.slice(0, min(4, buffer.size)).to_pybytes(),
        )

    @classmethod
    def from_file(
        cls, raw: LimitedReader, chunk_size: int, max_rows: int | None = None
    ) -> IpcPayload:
        """Stream from a Python file object (an HTTP body pipe, possibly decompressed)."""
        return cls(
            pa.PythonFile(raw, mode="r"),
            position=raw.tell,
            tail=raw.tail,
            at_end=lambda: raw.read(1) == b"",
            chunk_size=chunk_size,
            max_rows=max_rows,
            head=raw.head,
        )

    def _messages(self) -> Iterator[pa.RecordBatch]:
        after_last = self._position()
        while True:
            try:
                batch = self._reader.read_next_batch()
            except StopIteration:
                break
            except (pa.ArrowException, OSError, ValueError, zstandard.ZstdError, EOFError) as exc:
                raise _ipc_error(exc) from None
            after_last = self._position()
            yield batch
        consumed = self._position() - after_last
        ended = (consumed >= 8 and self._tail(8) == _EOS) or (
            consumed >= 4 and self._tail(4) == _LEGACY_EOS
        )
        if not ended:
            raise TruncatedStream(
                "Arrow IPC stream ended without its end-of-stream marker: the producer may have "
                f"stopped early (after {self.stream.batches} batches, {self.stream.rows} rows); "
                "nothing was written. Close the IPC writer before sending."
            )
        if not self._at_end():
            raise InvalidIPC("unexpected bytes after the Arrow IPC end-of-stream marker")
