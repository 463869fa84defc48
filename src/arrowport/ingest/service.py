"""The one ingest service both protocols call.

Three ways in, one write path:

* :meth:`IngestService.ingest_bytes` — a whole payload in memory (small binary bodies, JSON). Small
  payloads go to the group writer; large ones are written on a worker thread.
* :meth:`IngestService.ingest_pipe` — a large HTTP body, decoded while it is still arriving; DuckDB
  scans the batches on a worker thread, so memory stays flat whatever the body's size.
* :meth:`IngestService.ingest_batches` — already-decoded batches (Arrow Flight), written on the
  caller's thread.

Every way is one transaction; the result is returned only after the commit.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from arrowport.config import Settings, WriteMode
from arrowport.errors import (
    ArrowportError,
    InvalidOptions,
    Overloaded,
    PayloadTooLarge,
    SchemaMismatch,
    ShuttingDown,
    UnknownStream,
)
from arrowport.ingest.payload import (
    BatchStream,
    Codec,
    IpcPayload,
    LimitedReader,
    decompress,
    decompressing_reader,
)
from arrowport.ingest.pipe import BodyPipe, PipeClosed
from arrowport.metrics import Metrics
from arrowport.storage.database import Database, WriteJob, WriteOutcome
from arrowport.storage.group_writer import GroupWriter, PendingWrite
from arrowport.storage.identifiers import check_table_name

_MODES = ("append", "replace", "create")


@dataclass(frozen=True)
class IngestOptions:
    stream: str
    table: str
    mode: WriteMode
    chunk_size: int


@dataclass(frozen=True)
class IngestResult:
    stream: str
    table: str
    rows: int
    batches: int
    bytes: int
    seconds: float
    created: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "status": "success",
            "stream": self.stream,
            "rows_processed": self.rows,
            "message": "Data processed successfully",
            "table": self.table,
            "batches": self.batches,
            "bytes": self.bytes,
            "duration_ms": round(self.seconds * 1000, 3),
            "table_created": self.created,
        }


class IngestService:
    def __init__(self, settings: Settings, db: Database, metrics: Metrics) -> None:
        self.settings = settings
        self.db = db
        self.metrics = metrics
        limits = settings.limits
        self._writer = GroupWriter(db, settings.group_commit, limits.max_queued_writes)
        self._pool = ThreadPoolExecutor(limits.max_streaming_writes, "arrowport-writer")
        self._slots = threading.BoundedSemaphore(limits.max_streaming_writes)
        self._active = 0
        self._active_lock = threading.Lock()
        self._idle = threading.Condition(self._active_lock)
        self._accepting = True

    # -- options -------------------------------------------------------------------------------

    def resolve(
        self,
        stream: str,
        table: str | None = None,
        mode: str | None = None,
        chunk_size: int | None = None,
    ) -> IngestOptions:
        """Merge the request's options with the stream's configuration and the defaults."""
        configured = self.settings.streams.get(stream)
        if configured is None and self.settings.streams_only:
            raise UnknownStream(f"stream {stream!r} is not configured", stream=stream)
        target = table or (configured.table if configured else None) or stream
        check_table_name(target)
        chosen_mode = mode or (configured.mode if configured else "append")
        if chosen_mode not in _MODES:
            raise InvalidOptions(
                f"invalid mode {chosen_mode!r}: use one of {', '.join(_MODES)}", mode=chosen_mode
            )
        size = chunk_size or (configured.chunk_size if configured else None)
        size = size or self.settings.defaults.chunk_size
        if size < 1:
            raise InvalidOptions("chunk_size must be a positive number of rows")
        return IngestOptions(stream, target, chosen_mode, size)  # type: ignore[arg-type]

    # -- admission -----------------------------------------------------------------------------

    def _admit(self) -> None:
        if not self._accepting:
            raise ShuttingDown("the server is shutting down; retry later")
        if not self._slots.acquire(blocking=False):
            raise Overloaded(
                "all streaming writers are busy; retry shortly",
                retry_after=1,
                limit=self.settings.limits.max_streaming_writes,
            )
        with self._active_lock:
            self._active += 1

    def _release(self) -> None:
        self._slots.release()
        with self._active_lock:
            self._active -= 1
            self._idle.notify_all()

    # -- ways in -------------------------------------------------------------------------------

    async def ingest_bytes(
        self,
        options: IngestOptions,
        data: bytes,
        codec: Codec | None,
        expected_schema: pa.Schema | None = None,
    ) -> IngestResult:
        """Write a whole payload; ``expected_schema`` is the schema the sender declared."""
        started = time.perf_counter()
        limits = self.settings.limits
        stats: list[BatchStream] = []

        def open_payload() -> BatchStream:
            raw = decompress(data, codec, limits.max_body_bytes) if codec else data
            payload = IpcPayload.from_bytes(raw, options.chunk_size, limits.max_rows_per_request)
            if expected_schema is not None and not payload.stream.schema.equals(expected_schema):
                raise SchemaMismatch(
                    "batch.arrow_schema does not match the schema inside batch.data: "
                    f"declared {expected_schema.names}, sent {payload.stream.schema.names}"
                )
            stats.append(payload.stream)
            return payload.stream

        if len(data) <= limits.small_body_bytes and options.mode == "append":
            pending = PendingWrite(options.table, options.mode, lambda: open_payload().read_all())
            outcome = await asyncio.wrap_future(self._writer.submit(pending))
        else:
            self._admit()
            try:
                outcome = await asyncio.get_running_loop().run_in_executor(
                    self._pool, self._write_stream, options, open_payload
                )
            finally:
                self._release()
        batches = stats[0].batches if stats else 0
        return self._finish(options, outcome, batches, len(data), started)

    async def ingest_pipe(
        self,
        options: IngestOptions,
        chunks: Callable[[], Any],
        codec: Codec | None,
        max_raw_bytes: int,
    ) -> IngestResult:
        """Write an HTTP body while it arrives. ``chunks`` returns an async iterator of bytes."""
        started = time.perf_counter()
        limits = self.settings.limits
        self._admit()
        loop = asyncio.get_running_loop()
        pipe = BodyPipe(loop)

        def open_payload() -> BatchStream:
            source: Any = pipe if codec is None else decompressing_reader(pipe, codec)  # type: ignore[arg-type]
            limited = LimitedReader(source, limits.max_body_bytes)
            return IpcPayload.from_file(
                limited, options.chunk_size, limits.max_rows_per_request
            ).stream

        stats: list[BatchStream] = []

        def write() -> WriteOutcome:
            try:

                def opened() -> BatchStream:
                    stream = open_payload()
                    stats.append(stream)
                    return stream

                return self._write_stream(options, opened)
            finally:
                pipe.abort()

        try:
            future = loop.run_in_executor(self._pool, write)
            received = await _pump(chunks(), pipe, max_raw_bytes)
            outcome = await future
        finally:
            self._release()
        batches = stats[0].batches if stats else 0
        return self._finish(options, outcome, batches, received, started)

    def ingest_batches(
        self, options: IngestOptions, schema: pa.Schema, batches: Iterator[pa.RecordBatch]
    ) -> IngestResult:
        """Write decoded batches on the calling thread (Arrow Flight handlers)."""
        started = time.perf_counter()
        self._admit()
        try:
            stream = BatchStream(
                schema, batches, options.chunk_size, self.settings.limits.max_rows_per_request
            )
            outcome = self._write_stream(options, lambda: stream)
        finally:
            self._release()
        return self._finish(options, outcome, stream.batches, 0, started)

    # -- shared --------------------------------------------------------------------------------

    def _write_stream(
        self, options: IngestOptions, open_stream: Callable[[], BatchStream]
    ) -> WriteOutcome:
        stream = open_stream()
        try:
            return self.db.write([WriteJob(options.table, options.mode, stream.reader())])[0]
        except Exception:
            if stream.error is not None:
                raise stream.error from None
            raise

    def _finish(
        self,
        options: IngestOptions,
        outcome: WriteOutcome,
        batches: int,
        size: int,
        started: float,
    ) -> IngestResult:
        result = IngestResult(
            stream=options.stream,
            table=outcome.table,
            rows=outcome.rows,
            batches=batches,
            bytes=size,
            seconds=time.perf_counter() - started,
            created=outcome.created,
        )
        self.metrics.record_ingest(options.stream, result.rows, result.batches, result.bytes)
        return result

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def queued_writes(self) -> int:
        return self._writer.queued

    def close(self, timeout: float = 30.0) -> None:
        """Stop taking writes, let the running ones commit, then checkpoint and close."""
        self._accepting = False
        self._writer.stop()
        with self._active_lock:
            self._idle.wait_for(lambda: self._active == 0, timeout=timeout)
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.db.close()


async def _pump(chunks: Any, pipe: BodyPipe, max_raw_bytes: int) -> int:
    """Feed body chunks into the pipe; returns the bytes received."""
    received = 0
    try:
        async for chunk in chunks:
            received += len(chunk)
            if received > max_raw_bytes:
                pipe.finish(
                    PayloadTooLarge(
                        f"body exceeds the limit of {max_raw_bytes} bytes", limit=max_raw_bytes
                    )
                )
                return received
            await pipe.feed(chunk)
    except PipeClosed:
        return received
    except ArrowportError as exc:
        pipe.finish(exc)
        return received
    except Exception as exc:  # the client went away mid-body
        pipe.finish(exc)
        return received
    pipe.finish()
    return received
