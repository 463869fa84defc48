"""Turning request bytes into checked Arrow record batches.

An :class:`IpcPayload` reads an Arrow IPC stream batch by batch, each message checked against the
request's limits before pyarrow decodes it (:mod:`arrowport.ingest.ipc_messages`), and refuses to
pretend a cut stream is whole: the stream must end with its end-of-stream marker (a producer that
died between batches otherwise looks exactly like one that finished). Its :class:`BatchStream`
validates every batch, slices batches to ``chunk_size`` rows, enforces the row limit and keeps the
first error it raised, because DuckDB wraps errors raised inside its Arrow scan into its own
exception.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from typing import IO, Literal

import pyarrow as pa
import zstandard

from arrowport.errors import (
    ArrowportError,
    InvalidCompression,
    InvalidIPC,
    PayloadTooLarge,
    SchemaMismatch,
    UnsupportedMediaType,
)
from arrowport.ingest.empty_dictionaries import with_allocated_dictionaries
from arrowport.ingest.ipc_messages import Message, PayloadBudget, PayloadLimits
from arrowport.ingest.ipc_stream import (
    CheckedStream,
    Readable,
    ViewReader,
    checked_stream_bytes,
    stream_messages,
)
from arrowport.storage.schema import has_dictionary

Codec = Literal["zstd", "gzip", "lz4"]

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


def _ipc_error(exc: BaseException) -> ArrowportError:
    """Map a decoding failure raised by pyarrow (or a decompressor) to its client error."""
    if isinstance(exc, ArrowportError):
        return exc
    text = str(exc)
    if isinstance(exc, zstandard.ZstdError | zlib.error | EOFError | gzip.BadGzipFile):
        return InvalidCompression(f"body is not valid compressed data: {text}")
    if isinstance(exc, RecursionError):
        return InvalidIPC("the Arrow IPC data nests too deeply")
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
        self._dictionaries = any(has_dictionary(field.type) for field in schema)
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
                # First: nothing may read a batch (not even its size) before it is validated.
                _validate(batch, self.batches)
                if self._dictionaries:
                    batch = with_allocated_dictionaries(batch)
                self.rows += batch.num_rows
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


# In-memory payloads up to this size are decoded whole (see IpcPayload): at most this much is
# copied. The default size of a group-committed body (limits.small_body_bytes).
WHOLE_PAYLOAD_BYTES = 1024**2


def _decodable_whole(messages: list[Message]) -> bool:
    """Small, and every body a multiple of 8 bytes long (as the format asks): joined in one
    buffer, each body then starts as aligned as it would on its own."""
    size = sum(len(message.metadata) + message.body_length for message in messages)
    return size <= WHOLE_PAYLOAD_BYTES and all(m.body_length % 8 == 0 for m in messages)


_DECODING_ERRORS = (
    pa.ArrowException,
    OSError,
    ValueError,
    zstandard.ZstdError,
    EOFError,
    RecursionError,
)


class _Admitted(PayloadBudget):
    """The budget of messages admitted by their receiver as they arrived: checked once, there."""

    def admit(self, message: Message) -> None:
        pass


class IpcPayload:
    """The batches of one Arrow IPC stream, each message checked before pyarrow decodes it (see
    :mod:`arrowport.ingest.ipc_messages`) and each batch validated before anything reads it."""

    def __init__(
        self,
        messages: Iterator[Message],
        limits: PayloadLimits,
        chunk_size: int,
        max_rows: int | None = None,
        budget: PayloadBudget | None = None,
        in_memory: bool = False,
        admitted: bool = False,
    ) -> None:
        """``in_memory``: ``messages`` are all in memory already. A small payload's are then all
        checked first and decoded by pyarrow from one buffer, with no call back into Python per
        read (a third of a 1,000-row request's decoding time). ``admitted``: the caller has
        admitted every message against ``limits`` already, as it arrived (a Flight put's)."""
        if admitted:
            budget = _Admitted(limits)
        self.budget = budget if budget is not None else PayloadBudget(limits)
        whole = False
        if in_memory:
            listed = list(messages)
            whole = _decodable_whole(listed)
            messages = iter(listed)
        try:
            if whole:
                source: pa.NativeFile = pa.BufferReader(checked_stream_bytes(messages, self.budget))
            else:
                source = pa.PythonFile(CheckedStream(messages, self.budget), mode="r")
            self._reader = pa.ipc.open_stream(source)
        except _DECODING_ERRORS as exc:
            raise _ipc_error(exc) from None
        self.stream = BatchStream(self._reader.schema, self._batches(), chunk_size, max_rows)

    def expecting(self, schema: pa.Schema | None) -> IpcPayload:
        """This payload, once its schema is checked to be ``schema`` (the one its sender
        declared beside it, if any)."""
        if schema is not None and not self.stream.schema.equals(schema):
            raise SchemaMismatch(
                "batch.arrow_schema does not match the schema inside batch.data: "
                f"declared {schema.names}, sent {self.stream.schema.names}"
            )
        return self

    @classmethod
    def from_bytes(
        cls,
        data: bytes | bytearray | memoryview,
        limits: PayloadLimits,
        chunk_size: int,
        max_rows: int | None = None,
    ) -> IpcPayload:
        """A payload already in memory; its batches point into ``data`` (a small one's, into a
        checked copy of it)."""
        messages = stream_messages(ViewReader(data), limits)
        small = len(data) <= WHOLE_PAYLOAD_BYTES
        return cls(messages, limits, chunk_size, max_rows, in_memory=small)

    @classmethod
    def from_file(
        cls, raw: Readable, limits: PayloadLimits, chunk_size: int, max_rows: int | None = None
    ) -> IpcPayload:
        """Stream from a file object (an HTTP body pipe, possibly decompressing)."""
        return cls(stream_messages(raw, limits), limits, chunk_size, max_rows)

    def _batches(self) -> Iterator[pa.RecordBatch]:
        while True:
            try:
                batch = self._reader.read_next_batch()
            except StopIteration:
                return
            except _DECODING_ERRORS as exc:
                raise _ipc_error(exc) from None
            yield batch
