"""The one ingest service both protocols call.

Three ways in, one write path:

* :meth:`IngestService.ingest_bytes` — a whole payload in memory (small binary bodies, JSON). Small
  appends go to the group writer; anything larger is written on a worker thread.
* :meth:`IngestService.ingest_pipe` — a large HTTP body, decoded while it is still arriving; DuckDB
  scans the batches on a worker thread, so memory stays flat whatever the body's size.
* :meth:`IngestService.ingest_batches` — already-decoded batches (Arrow Flight): a small upload
  is group-committed, a larger one written on the caller's thread as it arrives.

Every way is one transaction, with the delivery records (idempotency key, producer offset) in the
same transaction as the rows; the result is returned only after the commit.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import itertools
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from arrowport.config import Settings, StreamSettings, WriteMode
from arrowport.errors import (
    InvalidOptions,
    Overloaded,
    PayloadTooLarge,
    RequestTimeout,
    SchemaMismatch,
    ShuttingDown,
    StreamLocked,
    UnknownStream,
)
from arrowport.ingest.payload import (
    BatchStream,
    Codec,
    IpcPayload,
    LimitedReader,
    decompressing_reader,
)
from arrowport.ingest.pipe import BodyPipe, PipeClosed
from arrowport.metrics import Metrics
from arrowport.storage.database import Database, WriteJob, WriteOutcome
from arrowport.storage.delivery import Delivery
from arrowport.storage.group_writer import GroupWriter, PendingWrite
from arrowport.storage.identifiers import check_stream_name, check_table_name
from arrowport.storage.table_writer import WritePolicy

_MODES = ("append", "replace", "create", "upsert")
_POLICIES = ("strict", "evolve")
_DUPLICATE_KEYS = ("error", "last_wins")


@dataclass(frozen=True)
class IngestOptions:
    stream: str
    table: str
    mode: WriteMode
    chunk_size: int
    policy: WritePolicy = field(default_factory=WritePolicy)
    dry_run: bool = False


@dataclass(frozen=True)
class DeliveryRequest:
    """Exactly-once options a client sent (``Idempotency-Key``, producer id and sequence)."""

    idempotency_key: str | None = None
    producer_id: str | None = None
    sequence: int | None = None

    def bind(self, options: IngestOptions, fingerprint: Callable[[], str]) -> Delivery | None:
        if self.idempotency_key is None and self.producer_id is None and self.sequence is None:
            return None
        return Delivery(
            options.stream, self.idempotency_key, self.producer_id, self.sequence, fingerprint
        )


NO_DELIVERY = DeliveryRequest()


@dataclass(frozen=True)
class IngestResult:
    stream: str
    table: str
    rows: int
    batches: int
    bytes: int
    seconds: float
    created: bool
    duplicate: bool = False
    producer_id: str | None = None
    sequence: int | None = None
    dry_run_actions: list[str] | None = None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "status": "success",
            "stream": self.stream,
            "rows_processed": self.rows,
            "message": (
                "Already committed; nothing written"
                if self.duplicate
                else "Data processed successfully"
            ),
            "table": self.table,
            "batches": self.batches,
            "bytes": self.bytes,
            "duration_ms": round(self.seconds * 1000, 3),
            "table_created": self.created,
            "duplicate": self.duplicate,
        }
        if self.producer_id is not None:
            body |= {"producer_id": self.producer_id, "sequence": self.sequence}
        if self.dry_run_actions is not None:
            body["message"] = "Dry run: nothing was written"
            body |= {"dry_run": True, "actions": self.dry_run_actions}
        return body


def _fingerprint(options: IngestOptions, digest: Callable[[], str]) -> Callable[[], str]:
    """A payload's identity for idempotency: where it goes and what it holds."""
    return lambda: f"{options.table.lower()}|{options.mode}|{digest()}"


class IngestService:
    def __init__(self, settings: Settings, db: Database, metrics: Metrics) -> None:
        self.settings = settings
        self.db = db
        self.metrics = metrics
        limits = settings.limits
        self._writer = GroupWriter(db, settings.group_commit, limits.max_queued_writes)
        self._pool = ThreadPoolExecutor(limits.max_streaming_writes, "arrowport-writer")
        self._slots = threading.BoundedSemaphore(limits.max_streaming_writes)
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._active = 0
        self._inflight_bytes = 0
        self._accepting = True
        self._stop_expiry = threading.Event()
        self._expiry = threading.Thread(
            target=self._expire_keys, name="arrowport-key-expiry", daemon=True
        )
        self._expiry.start()

    # -- options -------------------------------------------------------------------------------

    def resolve(
        self,
        stream: str,
        table: str | None = None,
        mode: str | None = None,
        chunk_size: int | None = None,
        key_columns: Sequence[str] | None = None,
        schema_policy: str | None = None,
        duplicate_keys: str | None = None,
        dry_run: bool = False,
    ) -> IngestOptions:
        """Merge the request's options with the stream's configuration and the defaults."""
        check_stream_name(stream)
        configured = self.settings.streams.get(stream)
        if configured is None and self.settings.streams_only:
            raise UnknownStream(f"stream {stream!r} is not configured", stream=stream)
        base = configured or StreamSettings()
        if configured is not None and configured.locked:
            _check_locked(
                stream,
                {
                    # DuckDB's table names are case-insensitive.
                    "table": (table and table.lower(), self.stream_table(stream).lower()),
                    "mode": (mode, base.mode),
                    "key_columns": (
                        list(key_columns) if key_columns else None,
                        base.key_columns or [],
                    ),
                    "schema_policy": (schema_policy, base.schema_policy),
                    "duplicate_keys": (duplicate_keys, base.duplicate_keys),
                },
            )
        target = table or self.stream_table(stream)
        check_table_name(target)
        chosen_mode = _choice("mode", mode or base.mode, _MODES)
        policy = WritePolicy(
            mode=chosen_mode,  # type: ignore[arg-type]
            key_columns=tuple(key_columns or base.key_columns or ()),
            schema_policy=_choice(  # type: ignore[arg-type]
                "schema_policy", schema_policy or base.schema_policy, _POLICIES
            ),
            duplicate_keys=_choice(  # type: ignore[arg-type]
                "duplicate_keys", duplicate_keys or base.duplicate_keys, _DUPLICATE_KEYS
            ),
        )
        if policy.mode == "upsert" and not policy.key_columns:
            raise InvalidOptions(
                "mode upsert needs key columns: configure the stream's key_columns "
                "or send ?key_columns=a,b"
            )
        size = chunk_size or base.chunk_size or self.settings.defaults.chunk_size
        if size < 1:
            raise InvalidOptions("chunk_size must be a positive number of rows")
        return IngestOptions(stream, target, policy.mode, size, policy, dry_run)

    def stream_table(self, stream: str) -> str:
        """The table a stream lands in when a request names none: configured, else its name."""
        configured = self.settings.streams.get(stream)
        return (configured.table if configured else None) or stream

    # -- admission -----------------------------------------------------------------------------

    @property
    def accepting(self) -> bool:
        return self._accepting

    def check_accepting(self) -> None:
        """503 ``shutting_down`` once the server drains. Checked when an upload arrives: one
        already running may finish."""
        if not self._accepting:
            raise ShuttingDown("the server is shutting down; retry later")

    def drain(self) -> None:
        """Refuse new writes (503 ``shutting_down``); running ones carry on."""
        self._accepting = False

    def reserve_bytes(self, size: int) -> None:
        """Count a declared body against ``max_inflight_bytes`` before reading any of it."""
        limit = self.settings.limits.max_inflight_bytes
        with self._lock:
            if not self._accepting:
                raise ShuttingDown("the server is shutting down; retry later")
            if self._inflight_bytes + size > limit and self._inflight_bytes > 0:
                raise Overloaded(
                    "too many bytes are being received right now; retry shortly",
                    retry_after=1,
                    limit=limit,
                )
            self._inflight_bytes += size

    def release_bytes(self, size: int) -> None:
        with self._lock:
            self._inflight_bytes -= size

    def _admit(self) -> None:
        """Take a streaming-writer slot. Whether the server still accepts work was decided when
        the request arrived (a request already running when a drain begins may finish)."""
        if not self._slots.acquire(blocking=False):
            raise Overloaded(
                "all streaming writers are busy; retry shortly",
                retry_after=1,
                limit=self.settings.limits.max_streaming_writes,
            )
        with self._lock:
            self._active += 1

    def _release(self) -> None:
        self._slots.release()
        with self._lock:
            self._active -= 1
            self._idle.notify_all()

    def _run_admitted(
        self, loop: asyncio.AbstractEventLoop, write: Callable[[], WriteOutcome]
    ) -> asyncio.Future[WriteOutcome]:
        """Run an admitted write on the pool; ``write`` releases its slot when it ends."""
        try:
            return loop.run_in_executor(self._pool, write)
        except RuntimeError:  # the pool is shut down: the server is stopping
            self._release()
            raise ShuttingDown("the server is shutting down; retry later") from None

    # -- ways in -------------------------------------------------------------------------------

    async def ingest_bytes(
        self,
        options: IngestOptions,
        data: bytes,
        codec: Codec | None,
        expected_schema: pa.Schema | None = None,
        delivery: DeliveryRequest = NO_DELIVERY,
    ) -> IngestResult:
        """Write a whole payload; ``expected_schema`` is the schema the sender declared."""
        started = time.perf_counter()
        limits = self.settings.limits
        stats: list[BatchStream] = []

        def open_payload() -> BatchStream:
            if codec is None:
                payload = IpcPayload.from_bytes(
                    data, options.chunk_size, limits.max_rows_per_request
                )
            else:
                # Decompressed as it is read: a small compressed body may expand enormously.
                source = decompressing_reader(io.BytesIO(data), codec)
                payload = IpcPayload.from_file(
                    LimitedReader(source, limits.max_body_bytes),
                    options.chunk_size,
                    limits.max_rows_per_request,
                )
            if expected_schema is not None and not payload.stream.schema.equals(expected_schema):
                raise SchemaMismatch(
                    "batch.arrow_schema does not match the schema inside batch.data: "
                    f"declared {expected_schema.names}, sent {payload.stream.schema.names}"
                )
            stats.append(payload.stream)
            return payload.stream

        bound = delivery.bind(options, _fingerprint(options, lambda: _sha256(data)))
        # Compressed bodies stream too: their size after decompression is unknown up front.
        groupable = options.mode == "append" and not options.dry_run and codec is None
        if len(data) <= limits.small_body_bytes and groupable:
            # Admission was decided when the request arrived (reserve_bytes); it may finish.
            pending = PendingWrite(
                options.table, options.policy, lambda: open_payload().read_all(), bound
            )
            outcome = await asyncio.wrap_future(self._writer.submit(pending))
        else:
            self._admit()

            def write() -> WriteOutcome:
                try:
                    return self._write_stream(options, open_payload, bound, in_memory=codec is None)
                finally:
                    self._release()

            outcome = await self._run_admitted(asyncio.get_running_loop(), write)
        batches = stats[0].batches if stats else 0
        return self._finish(options, outcome, batches, len(data), started, delivery)

    async def ingest_pipe(
        self,
        options: IngestOptions,
        chunks: AsyncIterator[bytes],
        codec: Codec | None,
        max_raw_bytes: int,
        delivery: DeliveryRequest = NO_DELIVERY,
    ) -> IngestResult:
        """Write an HTTP body while it arrives."""
        started = time.perf_counter()
        limits = self.settings.limits
        loop = asyncio.get_running_loop()
        pipe = BodyPipe(loop)
        stats: list[BatchStream] = []

        def open_payload() -> BatchStream:
            source: Any = pipe if codec is None else decompressing_reader(pipe, codec)  # type: ignore[arg-type]
            limited = LimitedReader(source, limits.max_body_bytes)
            stream = IpcPayload.from_file(
                limited, options.chunk_size, limits.max_rows_per_request
            ).stream
            stats.append(stream)
            return stream

        def digest() -> str:
            # The body must be read to its end before its fingerprint is known.
            for stream in stats:
                stream.drain()
            assert pipe.digest is not None
            return pipe.digest.hexdigest()

        if delivery.idempotency_key is not None:
            pipe.digest = hashlib.sha256()
        bound = delivery.bind(options, _fingerprint(options, digest))
        self._admit()  # after everything that can refuse the request: the slot is released below

        def write() -> WriteOutcome:
            # The slot is released by the thread that used it, even if the request task is
            # cancelled meanwhile: shutdown waits for every write that actually runs.
            try:
                return self._write_stream(options, open_payload, bound)
            finally:
                pipe.abort()
                self._release()

        future = self._run_admitted(loop, write)
        received = await _pump(chunks, pipe, max_raw_bytes, limits.body_timeout_seconds)
        outcome = await future
        batches = stats[0].batches if stats else 0
        return self._finish(options, outcome, batches, received, started, delivery)

    def ingest_batches(
        self,
        options: IngestOptions,
        schema: pa.Schema,
        batches: Iterator[pa.RecordBatch],
        delivery: DeliveryRequest = NO_DELIVERY,
    ) -> IngestResult:
        """Write decoded batches on the calling thread (Arrow Flight handlers, which call
        :meth:`check_accepting` when the upload arrives)."""
        started = time.perf_counter()
        digest = hashlib.sha256()
        if delivery.idempotency_key is not None:
            batches = _hashed(schema, batches, digest)
        received = [0]
        batches = measured(batches, received, self.settings.limits.max_body_bytes)
        limits = self.settings.limits
        # A small upload (the whole of it within small_body_bytes) is group-committed like a
        # small HTTP body; anything larger streams into DuckDB on this thread.
        head: list[pa.RecordBatch] = []
        small = options.mode == "append" and not options.dry_run
        while small:
            batch = next(batches, None)
            if batch is None:
                break
            head.append(batch)
            small = received[0] <= limits.small_body_bytes
        stream = BatchStream(
            schema,
            iter(head) if small else itertools.chain(head, batches),
            options.chunk_size,
            limits.max_rows_per_request,
        )

        def fingerprint() -> str:
            stream.drain()
            return digest.hexdigest()

        bound = delivery.bind(options, _fingerprint(options, fingerprint))
        if small:
            pending = PendingWrite(options.table, options.policy, stream.read_all, bound)
            outcome = self._writer.submit(pending).result()
        else:
            self._admit()
            try:
                outcome = self._write_stream(options, lambda: stream, bound)
            finally:
                self._release()
        return self._finish(options, outcome, stream.batches, received[0], started, delivery)

    # -- shared --------------------------------------------------------------------------------

    def _write_stream(
        self,
        options: IngestOptions,
        open_stream: Callable[[], BatchStream],
        delivery: Delivery | None,
        in_memory: bool = False,
    ) -> WriteOutcome:
        stream = open_stream()
        # A payload already in memory is handed over as a table (its batches are zero-copy
        # slices): DuckDB then scans it in C++, in parallel, without calling back into Python.
        data = stream.read_all() if in_memory else stream.reader()
        job = WriteJob(options.table, options.policy, data, delivery)
        try:
            return self.db.write_one(job, dry_run=options.dry_run)
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
        delivery: DeliveryRequest,
    ) -> IngestResult:
        result = IngestResult(
            stream=options.stream,
            table=outcome.table,
            rows=outcome.rows,
            batches=batches,
            bytes=size,
            seconds=time.perf_counter() - started,
            created=outcome.created,
            duplicate=outcome.duplicate,
            producer_id=delivery.producer_id,
            sequence=delivery.sequence,
            dry_run_actions=list(outcome.actions) if options.dry_run else None,
        )
        if not outcome.duplicate and not options.dry_run:
            self.metrics.record_ingest(options.stream, result.rows, result.batches, result.bytes)
        return result

    def last_sequence(self, stream: str, producer_id: str) -> int | None:
        return self.db.last_sequence(stream, producer_id)

    def _expire_keys(self) -> None:
        window = self.settings.delivery.idempotency_window_hours
        while not self._stop_expiry.wait(60.0):
            try:
                self.db.expire_idempotency_keys(window)
            except Exception:  # never let housekeeping kill the thread; retried next minute
                continue

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def queued_writes(self) -> int:
        return self._writer.queued

    def close(self, timeout: float = 30.0) -> None:
        """Stop taking writes, let the running ones commit, then checkpoint and close."""
        self._accepting = False
        self._stop_expiry.set()
        self._writer.stop()
        with self._lock:
            self._idle.wait_for(lambda: self._active == 0, timeout=timeout)
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.db.close()


def _check_locked(stream: str, options: dict[str, tuple[Any, Any]]) -> None:
    """Refuse every requested option (first of each pair) that differs from the configured one."""
    differing = [
        f"{name}={requested!r} (configured: {configured!r})"
        for name, (requested, configured) in options.items()
        if requested is not None and requested != configured
    ]
    if differing:
        raise StreamLocked(
            f"stream {stream!r} is locked to its configuration; refused: {', '.join(differing)}",
            stream=stream,
        )


def _choice(name: str, value: str, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise InvalidOptions(
            f"invalid {name} {value!r}: use one of {', '.join(allowed)}", **{name: value}
        )
    return value


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def measured(
    batches: Iterator[pa.RecordBatch], total: list[int], limit: int
) -> Iterator[pa.RecordBatch]:
    """Counts the Arrow bytes of batches as they pass into ``total[0]``; 413 past ``limit``
    (Flight has no body size to check in advance)."""
    for batch in batches:
        total[0] += batch.nbytes
        if total[0] > limit:
            raise PayloadTooLarge(f"upload exceeds the limit of {limit} bytes", limit=limit)
        yield batch


class _DigestSink:
    """A write-only file that feeds a hash."""

    closed = False

    def __init__(self, digest: Any) -> None:
        self._digest = digest

    def write(self, data: bytes) -> int:
        self._digest.update(data)
        return len(data)

    def flush(self) -> None:
        pass


def _hashed(
    schema: pa.Schema, batches: Iterator[pa.RecordBatch], digest: Any
) -> Iterator[pa.RecordBatch]:
    """Fingerprint batches by their IPC serialisation: column names, types, dictionaries and
    values count; how the sender sliced or aligned its buffers does not."""
    writer = pa.ipc.new_stream(pa.PythonFile(_DigestSink(digest), mode="w"), schema)
    for batch in batches:
        writer.write_batch(batch)
        yield batch
    writer.close()


async def _pump(
    chunks: AsyncIterator[bytes], pipe: BodyPipe, max_raw_bytes: int, timeout: float
) -> int:
    """Feed body chunks into the pipe; returns the bytes received.

    Whatever happens — the end of the body, a limit, a stalled or vanished client, or this task
    being cancelled at shutdown — the pipe is finished, so the reading thread never waits forever.
    """
    received = 0
    failure: BaseException | None = None
    loop = asyncio.get_running_loop()
    try:
        # One rescheduled deadline instead of wait_for per chunk (which costs a task each): it
        # covers waiting for the client's next bytes, never waiting for the writer to catch up.
        async with asyncio.timeout(loop.time() + timeout) as deadline:
            async for chunk in chunks:
                deadline.reschedule(None)
                received += len(chunk)
                if received > max_raw_bytes:
                    failure = PayloadTooLarge(
                        f"body exceeds the limit of {max_raw_bytes} bytes", limit=max_raw_bytes
                    )
                    break
                await pipe.feed(chunk)
                deadline.reschedule(loop.time() + timeout)
    except TimeoutError:
        failure = RequestTimeout(f"no body data received for {timeout:g} seconds; giving up")
    except PipeClosed:
        pass
    except Exception as exc:  # the client went away mid-body: the write fails with it
        failure = exc
    except BaseException:  # cancelled (shutdown): the write must not wait for more bytes
        failure = ShuttingDown("the server is stopping")
        raise
    finally:
        pipe.finish(failure)
    return received
