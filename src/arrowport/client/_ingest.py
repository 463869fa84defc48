"""How an ingest turns the caller's data into requests, and what it counts.

The data is read batch by batch; :class:`Cutter` groups the batches (slicing where needed) into
requests of at most ``request_rows`` rows and ``request_bytes`` bytes of Arrow data; each group is
written as one Arrow IPC stream, compressed, and sent with the producer offset
``(producer_id, sequence)``. At most a couple of requests are held at once, whatever the size of
the data. :class:`IngestRun` is the bookkeeping both clients share: which sequence a request
gets, which requests an earlier run already committed, and the running :class:`IngestSummary`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import pyarrow as pa

from arrowport.client._errors import RequestError
from arrowport.client._http import ARROW_STREAM, Call, path_part
from arrowport.client._models import ProducerOffset
from arrowport.errors import ArrowportError
from arrowport.options import (
    DuplicateKeysPolicy,
    IngestReply,
    IngestRequest,
    SchemaPolicy,
    WriteMode,
)

#: Arrow bytes (before compression) one request carries at most, unless told otherwise.
DEFAULT_REQUEST_BYTES = 16 * 1024 * 1024
#: Rows one request carries at most, unless told otherwise.
DEFAULT_REQUEST_ROWS = 1_000_000

Compression = Literal["zstd", "gzip"]


@dataclass(frozen=True)
class IngestSummary:
    """What one :meth:`Client.ingest` call did (also handed to its ``progress`` callback while
    it runs).

    ``rows``, ``requests`` and ``bytes`` count what is committed: now, or found committed by a
    retry whose first answer was lost (``duplicates`` of the requests). ``skipped_rows`` and
    ``skipped_requests`` (with ``resume=True``) count what an earlier run with the same
    producer had already committed and was not sent again. ``bytes`` are Arrow bytes before
    compression; ``wire_bytes`` what was sent for them. ``sequences`` is the range of producer
    sequences this call's requests used.
    """

    stream: str
    producer_id: str
    table: str | None = None
    rows: int = 0
    requests: int = 0
    bytes: int = 0
    wire_bytes: int = 0
    retries: int = 0
    duplicates: int = 0
    skipped_rows: int = 0
    skipped_requests: int = 0
    first_sequence: int | None = None
    last_sequence: int | None = None
    table_created: bool = False
    seconds: float = 0.0

    @property
    def sequences(self) -> range:
        if self.first_sequence is None or self.last_sequence is None:
            return range(0)
        return range(self.first_sequence, self.last_sequence + 1)


Progress = Callable[[IngestSummary], None]


# -- the caller's data as record batches ---------------------------------------------------------


def arrow_reader(data: Any) -> pa.RecordBatchReader | None:
    """``data`` as a reader when it is Arrow data (anything with ``__arrow_c_stream__``: pyarrow
    tables and readers, polars and pandas DataFrames, DuckDB relations...), else ``None``."""
    if isinstance(data, pa.RecordBatchReader):
        return data
    if isinstance(data, pa.Table):
        return data.to_reader()
    if isinstance(data, pa.RecordBatch):
        return pa.RecordBatchReader.from_batches(data.schema, [data])
    if hasattr(data, "__arrow_c_stream__"):
        return pa.RecordBatchReader.from_stream(data)
    if hasattr(data, "__arrow_c_array__"):
        batch = pa.record_batch(data)
        return pa.RecordBatchReader.from_batches(batch.schema, [batch])
    return None


def check_iterable(data: Any, asynchronous: bool = False) -> None:
    """Refuse what is not iterable, or iterable but not a sequence of batches (text, bytes, a
    mapping); an asynchronous iterable only for the asynchronous client."""
    if isinstance(data, str | bytes | bytearray | memoryview | dict):
        raise TypeError(
            f"cannot ingest a {type(data).__name__}: pass Arrow data (a pyarrow Table or "
            "RecordBatchReader, a polars DataFrame, a DuckDB relation...) or an iterable of "
            "pyarrow.RecordBatch"
        )
    if isinstance(data, AsyncIterable) and not isinstance(data, Iterable) and not asynchronous:
        raise TypeError("an asynchronous iterable needs AsyncClient.ingest")
    if not isinstance(data, Iterable | AsyncIterable):
        raise TypeError(
            f"cannot ingest a {type(data).__name__}: it speaks neither the Arrow PyCapsule "
            "stream interface (__arrow_c_stream__) nor iteration; for pandas use "
            "pyarrow.Table.from_pandas(frame)"
        )


def as_batch(item: Any, position: int) -> pa.RecordBatch:
    """One item of an iterable of batches."""
    if isinstance(item, pa.RecordBatch):
        return item
    if hasattr(item, "__arrow_c_array__"):
        return pa.record_batch(item)
    raise TypeError(
        f"item {position} of the data is a {type(item).__name__}, not a pyarrow.RecordBatch"
    )


def iter_batches(data: Any, cutter: Cutter | None = None) -> Iterator[pa.RecordBatch]:
    """Every batch of ``data`` (Arrow data, or an iterable of batches), in order; ``cutter``
    learns the schema of Arrow data before its first batch."""
    reader = arrow_reader(data)
    if reader is not None:
        if cutter is not None:
            cutter.expect(reader.schema)
        yield from reader
        return
    check_iterable(data)
    for position, item in enumerate(data):
        yield as_batch(item, position)


def next_batch(reader: pa.RecordBatchReader) -> pa.RecordBatch | None:
    """The reader's next batch, ``None`` at the end (for a worker thread: no StopIteration)."""
    try:
        return reader.read_next_batch()
    except StopIteration:
        return None


# -- cutting batches into requests ---------------------------------------------------------------


class Cutter:
    """Groups a sequence of batches into requests of at most ``max_rows`` rows and at most
    ``max_bytes`` Arrow bytes (``None``: rows alone decide), slicing batches where a limit falls
    inside one (slices share the batch's memory). A single row larger than ``max_bytes`` goes in
    a request of its own. A batch whose schema differs from the one before starts a new request.
    Data without rows makes one request of no rows, when its schema is known: it creates (or,
    replacing, empties) the table.

    Without ``max_bytes`` the cut depends on the rows alone, never on how they were batched:
    request ``i`` holds rows ``i * max_rows`` up to ``(i + 1) * max_rows``.
    """

    def __init__(self, max_rows: int, max_bytes: int | None) -> None:
        if max_rows < 1:
            raise ValueError("request_rows must be at least 1")
        if max_bytes is not None and max_bytes < 1:
            raise ValueError("request_bytes must be at least 1")
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self._pending: list[pa.RecordBatch] = []
        self._rows = 0
        self._bytes = 0
        self._schema: pa.Schema | None = None
        self._emitted = 0

    def expect(self, schema: pa.Schema) -> None:
        """The data's schema, known before its first batch (Arrow data)."""
        if self._schema is None:
            self._schema = schema

    def add(self, batch: pa.RecordBatch) -> list[list[pa.RecordBatch]]:
        """Take ``batch``; the requests it completed."""
        ready: list[list[pa.RecordBatch]] = []
        if self._pending and not batch.schema.equals(self._schema):
            ready.append(self._take())
        self._schema = batch.schema
        while batch.num_rows:
            count = self._fitting(batch)
            if count == 0:
                if self._pending:
                    ready.append(self._take())
                    continue
                count = 1  # one row over the byte limit: alone
            piece = batch if count == batch.num_rows else batch.slice(0, count)
            self._pending.append(piece)
            self._rows += count
            self._bytes += piece.nbytes
            batch = batch.slice(count)
            full_bytes = self.max_bytes is not None and self._bytes >= self.max_bytes
            if self._rows >= self.max_rows or full_bytes:
                ready.append(self._take())
        return ready

    def finish(self) -> list[pa.RecordBatch] | None:
        """The last, partly filled request, if any."""
        if self._pending:
            return self._take()
        if self._emitted == 0 and self._schema is not None:
            self._emitted += 1
            return [pa.RecordBatch.from_pylist([], schema=self._schema)]
        return None

    def _fitting(self, batch: pa.RecordBatch) -> int:
        """How many of ``batch``'s first rows fit in the request being filled."""
        count = int(min(batch.num_rows, self.max_rows - self._rows))
        if self.max_bytes is None:
            return count
        room = self.max_bytes - self._bytes
        if count == batch.num_rows and batch.nbytes <= room:
            return count
        if room <= 0:
            return 0
        per_row = max(batch.nbytes / batch.num_rows, 1e-9)
        count = min(count, int(room / per_row))
        while count > 0:
            size = int(batch.slice(0, count).nbytes)
            if size <= room:
                return count
            count = min(count - 1, int(count * room / size))
        return 0

    def _take(self) -> list[pa.RecordBatch]:
        taken = self._pending
        self._pending, self._rows, self._bytes = [], 0, 0
        self._emitted += 1
        return taken


def encode(batches: Sequence[pa.RecordBatch], compression: Compression | None) -> bytes:
    """One Arrow IPC stream (with its end-of-stream marker) of ``batches``, compressed whole as
    the ``Content-Encoding`` says."""
    sink = pa.BufferOutputStream()
    out = sink if compression is None else pa.CompressedOutputStream(sink, compression)
    with pa.ipc.new_stream(out, batches[0].schema) as writer:
        for batch in batches:
            writer.write_batch(batch)
    if compression is not None:
        out.close()
    body: bytes = sink.getvalue().to_pybytes()
    return body


# -- one ingest's bookkeeping --------------------------------------------------------------------


@dataclass(frozen=True)
class Planned:
    """One request of an ingest: its rows, its sequence, and whether it is already committed."""

    index: int
    sequence: int
    rows: int
    nbytes: int
    skip: bool


class IngestRun:
    """The state of one ingest call, shared by :class:`Client` and :class:`AsyncClient`."""

    def __init__(
        self,
        stream: str,
        *,
        table: str | None,
        mode: WriteMode | None,
        key_columns: Sequence[str] | str | None,
        schema_policy: SchemaPolicy | None,
        duplicate_keys: DuplicateKeysPolicy | None,
        chunk_size: int | None,
        producer_id: str | None,
        resume: bool,
        request_rows: int | None,
        request_bytes: int | None,
        compression: Compression | Literal["none"] | None,
        progress: Progress | None,
    ) -> None:
        if resume and producer_id is None:
            raise ValueError("resume=True needs the producer_id of the run to resume")
        if resume and request_bytes is not None:
            raise ValueError(
                "resume=True cuts requests by rows alone (request_rows), so that a rerun cuts "
                "the same data the same way; request_bytes cannot be used with it"
            )
        if compression not in ("zstd", "gzip", "none", None):
            raise ValueError(f"compression must be 'zstd', 'gzip' or None, not {compression!r}")
        if isinstance(key_columns, str):
            key_columns = (key_columns,)
        self.asks_offset = producer_id is not None
        self.resume = resume
        self.compression: Compression | None = None if compression == "none" else compression
        self.progress = progress
        try:
            self.template = IngestRequest(
                stream,
                table=table,
                mode=mode,
                chunk_size=chunk_size,
                key_columns=None if key_columns is None else tuple(key_columns),
                schema_policy=schema_policy,
                duplicate_keys=duplicate_keys,
                producer_id=producer_id or f"py-{uuid.uuid4().hex}",
                sequence=0,
            )
        except ArrowportError as exc:
            raise RequestError(exc.code, exc.status, exc.message, exc.details) from None
        self.cutter = Cutter(
            DEFAULT_REQUEST_ROWS if request_rows is None else request_rows,
            None if resume else DEFAULT_REQUEST_BYTES if request_bytes is None else request_bytes,
        )
        self.producer_id: str = self.template.producer_id or ""
        self._base = 0
        self._skip_below = 0
        self._next_index = 0
        self._started = time.monotonic()
        self._summary = IngestSummary(stream=stream, producer_id=self.producer_id)

    @property
    def stream(self) -> str:
        return self.template.stream

    def begin(self, offset: ProducerOffset | None) -> None:
        """Number the requests: from the producer's next sequence, or (resuming) from 0,
        skipping those already committed."""
        following = offset.next_sequence if offset is not None else None
        if self.resume:
            self._skip_below = following or 0
        else:
            self._base = following or 0
        self._started = time.monotonic()

    def plan(self, batches: Sequence[pa.RecordBatch]) -> Planned:
        index = self._next_index
        self._next_index += 1
        sequence = self._base + index
        return Planned(
            index=index,
            sequence=sequence,
            rows=sum(b.num_rows for b in batches),
            nbytes=sum(b.nbytes for b in batches),
            skip=sequence < self._skip_below,
        )

    def call(self, planned: Planned, body: bytes) -> Call:
        mode = self.template.mode
        # A replace or create applies to the data as a whole: its first request replaces or
        # creates the table, the ones after it add to it.
        if mode in ("replace", "create") and planned.index > 0:
            mode = "append"
        request = replace(self.template, mode=mode, sequence=planned.sequence)
        headers = {"Content-Type": ARROW_STREAM} | request.headers()
        if self.compression is not None:
            headers["Content-Encoding"] = self.compression
        return Call(
            "POST",
            f"/stream/{path_part(self.stream)}",
            what=f"POST /stream/{self.stream} (sequence {planned.sequence})",
            params=request.query_params(),
            headers=headers,
            content=body,
        )

    def skipped(self, planned: Planned) -> None:
        self._update(
            skipped_rows=self._summary.skipped_rows + planned.rows,
            skipped_requests=self._summary.skipped_requests + 1,
        )

    def acknowledged(self, planned: Planned, body: bytes, answer: Any, retries: int) -> None:
        reply = IngestReply.from_json(answer)
        summary = self._summary
        if reply.duplicate and retries == 0:
            if self.resume:  # committed by an earlier run while this one started
                self.skipped(planned)
                return
            raise RequestError(
                "producer_conflict",
                409,
                f"sequence {planned.sequence} of producer {self.producer_id!r} on stream "
                f"{self.stream!r} was already committed by another sender, so this request's "
                f"{planned.rows} rows were not written: give every sender its own producer_id",
                {"producer_id": self.producer_id, "sequence": planned.sequence},
            )
        self._update(
            table=reply.table,
            rows=summary.rows + planned.rows,
            requests=summary.requests + 1,
            bytes=summary.bytes + planned.nbytes,
            wire_bytes=summary.wire_bytes + len(body),
            retries=summary.retries + retries,
            duplicates=summary.duplicates + (1 if reply.duplicate else 0),
            first_sequence=(
                planned.sequence if summary.first_sequence is None else summary.first_sequence
            ),
            last_sequence=planned.sequence,
            table_created=summary.table_created or reply.table_created,
        )

    def summary(self) -> IngestSummary:
        return replace(self._summary, seconds=time.monotonic() - self._started)

    def _update(self, **changes: Any) -> None:
        self._summary = replace(self._summary, **changes)
        if self.progress is not None:
            self.progress(self.summary())
