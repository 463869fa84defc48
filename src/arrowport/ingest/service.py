"""The one ingest service every protocol calls.

Three ways in, one write path:

* :meth:`IngestService.ingest_bytes` — a whole payload in memory (small binary bodies, JSON,
  small Flight puts). Small appends go to the group writer; anything larger is written on a
  worker thread.
* :meth:`IngestService.ingest_pipe` — a large HTTP body, decoded while it is still arriving;
  DuckDB scans the batches on a worker thread, so memory stays flat whatever the body's size.
* :meth:`IngestService.write_stream` — IPC messages already arriving on a thread of the
  caller's (a Flight put), written on the calling thread.

Every way is one transaction, with the delivery records (idempotency key, producer offset) in the
same transaction as the rows; the result is returned only after the commit. Every payload is
read through :class:`~arrowport.ingest.payload.IpcPayload`: checked message by message against
the limits, validated batch by batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import pyarrow as pa
import structlog

from arrowport.config import Settings
from arrowport.errors import ShuttingDown
from arrowport.ingest.admission import Admission, Reservation
from arrowport.ingest.bodies import Body
from arrowport.ingest.ipc_messages import Message, PayloadLimits
from arrowport.ingest.payload import BatchStream, Codec, IpcPayload, decompressing_reader
from arrowport.ingest.pipe import BodyPace, BodyPipe, pump
from arrowport.ingest.streams import IngestOptions, Streams
from arrowport.metrics import Metrics
from arrowport.options import IngestReply, check_key, check_stream_name
from arrowport.storage.delivery import Delivery
from arrowport.storage.group_writer import GroupWriter, PendingWrite
from arrowport.storage.interface import Storage
from arrowport.storage.writes import WriteJob, WriteOutcome

log = structlog.get_logger(__name__)

# How long a shutdown waits for streaming writes even once its deadline has passed: a write
# whose request was cancelled then notices (within a second) and rolls back.
ROLLBACK_GRACE_SECONDS = 3.0


def payload_limits(settings: Settings) -> PayloadLimits:
    limits = settings.limits
    return PayloadLimits(limits.max_body_bytes, limits.max_message_bytes, limits.max_columns)


def _delivery(options: IngestOptions, digest: Callable[[], str]) -> Delivery | None:
    """The request's exactly-once bookkeeping; its fingerprint says where the payload goes and
    what it holds (known once the payload has been read)."""
    if options.idempotency_key is None and options.producer_id is None:
        return None
    return Delivery(
        options.stream,
        options.idempotency_key,
        options.producer_id,
        options.sequence,
        lambda: f"{options.table.lower()}|{options.mode}|{digest()}",
    )


class IngestService:
    def __init__(self, settings: Settings, db: Storage, metrics: Metrics) -> None:
        self.settings = settings
        self.db = db
        self.metrics = metrics
        self.streams = Streams(settings)
        self.admission = Admission(settings.limits)
        self.limits = payload_limits(settings)
        limits = settings.limits
        self._writer = GroupWriter(db, settings.group_commit, limits.max_queued_writes)
        self._pool = ThreadPoolExecutor(limits.max_streaming_writes, "arrowport-writer")

    # -- ways in -------------------------------------------------------------------------------

    async def ingest_bytes(
        self,
        options: IngestOptions,
        body: Body,
        client: str | None,
        expected_schema: pa.Schema | None = None,
    ) -> IngestReply:
        """Write a whole payload; ``expected_schema`` is the schema the sender declared."""
        started = time.perf_counter()

        payload = _Opened(
            lambda: body.payload(self.limits, options.chunk_size, self._max_rows).expecting(
                expected_schema
            )
        )
        delivery = _delivery(options, body.digest)
        # Compressed bodies stream too: their size once decompressed is unknown up front.
        small = len(body) <= self.settings.limits.small_body_bytes and not body.codec
        if small and options.groupable:
            outcome = await self._writer.committed(self._pending(options, payload.open, delivery))
        else:
            outcome = await self._start_streaming(
                client, lambda: self._write(options, payload.open, delivery, body.in_memory)
            )
        return self.finish(options, outcome, payload.batches, len(body), started)

    async def ingest_pipe(
        self,
        options: IngestOptions,
        chunks: AsyncIterator[bytes],
        codec: Codec | None,
        client: str | None,
        expected_schema: pa.Schema | None = None,
        paced: bool = False,
        held: Reservation | None = None,
    ) -> IngestReply:
        """Write an HTTP body (or a JSON body's payload) while it arrives; ``paced``: the
        caller holds ``chunks`` to :meth:`pace` already (a JSON body, as it arrives, rather
        than what it decodes to); ``held``: the body's reservation of memory, which the pipe's
        buffer joins (a JSON body's, holding what came before its payload)."""
        started = time.perf_counter()
        pipe = BodyPipe(asyncio.get_running_loop())
        source = pipe if codec is None else decompressing_reader(pipe, codec)  # type: ignore[arg-type]
        payload = _Opened(
            lambda: IpcPayload.from_file(
                source, self.limits, options.chunk_size, self._max_rows
            ).expecting(expected_schema)
        )
        if options.idempotency_key is not None:
            pipe.digest = hashlib.sha256()
        digest = payload.after(lambda: pipe.digest.hexdigest() if pipe.digest else "")
        delivery = _delivery(options, digest)

        def write() -> WriteOutcome:
            try:
                return self._write(options, payload.open, delivery)
            finally:
                pipe.abort()

        reserving = self.admission.reserving() if held is None else contextlib.nullcontext(held)
        with reserving as reservation:
            reservation.grow(pipe.high_water)
            written = self._start_streaming(client, write)
            pace = None if paced else self.pace()
            received = await pump(chunks, pipe, pace, self.settings.limits.max_body_bytes)
            outcome = await written
        return self.finish(options, outcome, payload.batches, received, started)

    def write_stream(
        self,
        options: IngestOptions,
        messages: Iterator[Message],
        digest: Callable[[], str],
        abandoned: Callable[[], bool],
    ) -> tuple[WriteOutcome, int]:
        """Write IPC messages as they arrive (each admitted against the limits by their
        receiver already), on the calling thread (a Flight put's writer, which holds a streaming
        slot: see :meth:`streaming_slot`); returns the outcome and the number of record batches.
        ``digest`` fingerprints the messages once all have arrived; nothing commits once
        ``abandoned()`` says the client gave up."""
        payload = self._message_payload(options, messages, small=False)
        delivery = _delivery(options, payload.after(digest))
        outcome = self._write(options, payload.open, delivery, abandoned=abandoned)
        return outcome, payload.batches

    def write_small(
        self,
        options: IngestOptions,
        messages: list[Message],
        digest: Callable[[], str],
        abandoned: Callable[[], bool],
    ) -> tuple[WriteOutcome, int]:
        """A small Flight put, all arrived and admitted: group-committed (when it may be), on
        the calling thread; returns the outcome and the number of record batches."""
        payload = self._message_payload(options, messages, small=True)
        delivery = _delivery(options, digest)
        if options.groupable:
            outcome = self.submit_small(options, payload.open, delivery, abandoned).result()
        else:
            outcome = self._write(options, payload.open, delivery, True, abandoned)
        return outcome, payload.batches

    async def group_small(
        self,
        options: IngestOptions,
        messages: list[Message],
        digest: Callable[[], str],
        abandoned: Callable[[], bool],
    ) -> tuple[WriteOutcome, int]:
        """:meth:`write_small` of a groupable put, awaited on an event loop: no thread waits
        for the group's commit."""
        assert options.groupable
        payload = self._message_payload(options, messages, small=True)
        delivery = _delivery(options, digest)
        pending = self._pending(options, payload.open, delivery, abandoned)
        return await self._writer.committed(pending), payload.batches

    def _message_payload(
        self, options: IngestOptions, messages: Iterable[Message], small: bool
    ) -> _Opened:
        """A Flight put's ``messages``, admitted against the limits as they arrived. ``small``:
        all of them are in memory already (see :class:`IpcPayload`); otherwise they are read as
        DuckDB takes them (an upload arriving: memory stays bounded)."""
        return _Opened(
            lambda: IpcPayload(
                iter(messages),
                self.limits,
                options.chunk_size,
                self._max_rows,
                in_memory=small,
                admitted=True,
            )
        )

    def submit_small(
        self,
        options: IngestOptions,
        open_payload: Callable[[], BatchStream],
        delivery: Delivery | None,
        abandoned: Callable[[], bool] | None = None,
    ) -> Future[WriteOutcome]:
        """Queue a small append for the group writer; the future resolves after its commit."""
        return self._writer.submit(self._pending(options, open_payload, delivery, abandoned))

    @staticmethod
    def _pending(
        options: IngestOptions,
        open_payload: Callable[[], BatchStream],
        delivery: Delivery | None,
        abandoned: Callable[[], bool] | None = None,
    ) -> PendingWrite:
        return PendingWrite(
            options.table, options.policy, lambda: open_payload().read_all(), delivery, abandoned
        )

    # -- streaming slots -----------------------------------------------------------------------

    def streaming_slot(self, client: str | None) -> _Slot:
        """Hold one of ``client``'s streaming-writer slots while the block runs (503 if none)."""
        return _Slot(self.admission, client)

    def _start_streaming(
        self, client: str | None, write: Callable[[], WriteOutcome]
    ) -> asyncio.Future[WriteOutcome]:
        """Run ``write`` on the writer pool with a slot of ``client``'s; the slot is given back
        by the thread that used it, even if the request task is cancelled meanwhile: shutdown
        waits for every write that actually runs."""
        self.admission.take_stream(client)

        def run() -> WriteOutcome:
            try:
                return write()
            finally:
                self.admission.give_stream(client)

        try:
            return asyncio.get_running_loop().run_in_executor(self._pool, run)
        except RuntimeError:  # the pool is shut down: the server is stopping
            self.admission.give_stream(client)
            raise ShuttingDown("the server is shutting down; retry later") from None

    # -- shared --------------------------------------------------------------------------------

    def pace(self) -> BodyPace:
        """How fast an HTTP body must arrive (``limits.body_timeout_seconds``,
        ``limits.min_body_bytes_per_second``)."""
        limits = self.settings.limits
        return BodyPace(
            asyncio.get_running_loop(),
            limits.body_timeout_seconds,
            limits.min_body_bytes_per_second,
        )

    @property
    def _max_rows(self) -> int | None:
        return self.settings.limits.max_rows_per_request

    def _write(
        self,
        options: IngestOptions,
        open_stream: Callable[[], BatchStream],
        delivery: Delivery | None,
        in_memory: bool = False,
        abandoned: Callable[[], bool] | None = None,
    ) -> WriteOutcome:
        stream = open_stream()
        # A payload already in memory is handed over as a table (its batches are zero-copy
        # slices): DuckDB then scans it in C++, in parallel, without calling back into Python.
        data = stream.read_all() if in_memory else stream.reader()
        job = WriteJob(options.table, options.policy, data, delivery, abandoned)
        try:
            return self.db.write_one(job, dry_run=options.dry_run)
        except Exception:
            if stream.error is not None:
                raise stream.error from None
            raise

    def finish(
        self,
        options: IngestOptions,
        outcome: WriteOutcome,
        batches: int,
        size: int,
        started: float,
    ) -> IngestReply:
        """The reply to a write that ended, counted in the metrics when it wrote."""
        reply = IngestReply(
            stream=options.stream,
            rows_processed=outcome.rows,
            table=outcome.table,
            batches=batches,
            bytes=size,
            duration_ms=round((time.perf_counter() - started) * 1000, 3),
            table_created=outcome.created,
            duplicate=outcome.duplicate,
            producer_id=options.producer_id,
            sequence=options.sequence,
            dry_run=options.dry_run,
            actions=tuple(outcome.actions) if options.dry_run else None,
        )
        if not outcome.duplicate and not options.dry_run:
            self.metrics.record_ingest(options.stream, outcome.rows, batches, size)
        return reply

    def last_sequence(self, stream: str, producer_id: str) -> int | None:
        """The last sequence committed for a producer; a name no request could carry is
        refused as its ingest would be (400 ``invalid_name``, 422 ``invalid_options``, 404
        ``unknown_stream`` under ``streams_only``)."""
        check_stream_name(stream)
        check_key("producer_id", producer_id)
        self.streams.configured(stream)
        return self.db.last_sequence(stream, producer_id)

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def queued_writes(self) -> int:
        return self._writer.queued

    def close(self) -> None:
        """Stop taking writes, let the running ones commit (until
        ``limits.shutdown_timeout_seconds`` after the shutdown began: one deadline for all of
        it), then checkpoint and close."""
        self.admission.drain()
        self._writer.stop()
        deadline = self.settings.limits.shutdown_timeout_seconds
        # Writes whose requests were cancelled at the deadline get a moment to roll back.
        if not self.admission.wait_idle(deadline, at_least=ROLLBACK_GRACE_SECONDS):
            log.warning("streaming writes still running at shutdown; closing the database")
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.db.close()


class _Slot:
    def __init__(self, admission: Admission, client: str | None) -> None:
        self._admission = admission
        self._client = client

    def __enter__(self) -> None:
        self._admission.take_stream(self._client)

    def __exit__(self, *exc: object) -> None:
        self._admission.give_stream(self._client)


class _Opened:
    """A payload opened on the writer's thread, remembered so that its batch count is known
    afterwards and its fingerprint can wait for its last byte."""

    def __init__(self, factory: Callable[[], IpcPayload]) -> None:
        self._factory = factory
        self._stream: BatchStream | None = None

    def open(self) -> BatchStream:
        self._stream = self._factory().stream
        return self._stream

    @property
    def batches(self) -> int:
        return self._stream.batches if self._stream is not None else 0

    def after(self, digest: Callable[[], str]) -> Callable[[], str]:
        """``digest``, called once the payload has been read to its end."""

        def complete() -> str:
            if self._stream is not None:
                self._stream.drain()
            return digest()

        return complete
