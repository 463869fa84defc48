"""Landing a Flight put: its frames as they arrive, checked and counted, in one transaction.

A small put (all of it within ``limits.small_body_bytes``) is group-committed like a small HTTP
body; a larger one is read on one of the Flight server's threads while DuckDB writes it on
another, through a bounded buffer (:mod:`arrowport.flight.put_buffer`). Arrowport's own puts
and Flight SQL's bulk ingestion both land here.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import itertools
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator
from concurrent.futures import Executor, Future
from typing import Any, TypeVar

import structlog

from arrowport.errors import PayloadTooLarge, TruncatedStream
from arrowport.flight.arrival import CANCEL_GRACE_SECONDS, Arrival
from arrowport.flight.frames import Frame, frame_messages, parse_frame
from arrowport.flight.put_buffer import PutBuffer
from arrowport.ingest.admission import Reservation
from arrowport.ingest.ipc_messages import Message, PayloadBudget
from arrowport.ingest.streams import IngestOptions
from arrowport.memory import release_free_heap
from arrowport.options import IngestReply
from arrowport.services import Services
from arrowport.storage.database import WriteOutcome

log = structlog.get_logger("arrowport.flight")

T = TypeVar("T")

# Uploaded bytes between two releases of the heap's free pages (see release_free_heap).
TRIM_EVERY_BYTES = 128 * 1024**2


class PutLanding:
    """Lands puts through the ingest service, under its admission and limits."""

    def __init__(self, services: Services) -> None:
        self._ingest = services.ingest
        self._metrics = services.metrics
        self._flight = services.settings.flight
        self._small_body_bytes = services.settings.limits.small_body_bytes

    def land(
        self,
        options: IngestOptions,
        frames: Iterator[Frame],
        client: str | None,
        abandoned: Callable[[], bool],
        started: float,
    ) -> IngestReply:
        """Land a put's frames (the first carries the descriptor) in one transaction: a small
        put group-committed, a larger one read while DuckDB writes it; the reply after the
        commit. Both Arrowport's own puts and Flight SQL's bulk ingestion come here."""
        admission = self._ingest.admission
        admission.check_accepting()
        with admission.reserving() as held:
            upload = _Upload(self._ingest.limits, options.idempotency_key is not None, held)
            messages = upload.admitted(frame_messages(frames))
            head, whole = upload.head(messages, self._small_body_bytes)
            if whole:  # a small upload, all here: group-committed like a small HTTP body
                with self._slot(options, client):
                    outcome, batches = self._ingest.write_small(
                        options, head, upload.digest, abandoned
                    )
            else:
                upload.buffering(self._flight.upload_buffer_bytes)
                everything = itertools.chain(head, messages)
                outcome, batches = self._buffered(
                    options, everything, upload.digest, client, abandoned
                )
        reply = self._ingest.finish(options, outcome, batches, upload.received, started)
        log.debug("flight put committed", stream=options.stream, rows=reply.rows_processed)
        return reply

    async def land_arriving(
        self,
        options: IngestOptions,
        first: Frame,
        following: Callable[[], Coroutine[Any, Any, Frame | None]],
        client: str | None,
        abandoned: Callable[[], bool],
        started: float,
        threads: Executor,
    ) -> IngestReply:
        """:meth:`land` for frames arriving on an event loop (``first``, then each that
        ``following`` reads, until None): a small put is received and group-committed there
        without a thread of its own; anything else goes on as :meth:`land` does, on one of
        ``threads``, reading the rest of the frames from the loop."""
        admission = self._ingest.admission
        admission.check_accepting()
        with admission.reserving() as held:
            upload = _Upload(self._ingest.limits, options.idempotency_key is not None, held)
            head: list[Message] = []
            whole = True
            crossing: list[Frame] = []
            frame: Frame | None = first
            while frame is not None:
                if upload.received + frame.size > self._small_body_bytes:
                    # Not a small put: this frame, like the rest, is realigned (copied) and
                    # hashed on a thread, not on the loop every other call shares. It is
                    # checked against the limits here first: a message too large is refused
                    # as such (413), not as an overload of the memory or writers it would hold.
                    whole = False
                    crossing.append(frame)
                    upload.check_ahead(frame)
                    upload.buffering(self._flight.upload_buffer_bytes, frame.size)
                    break
                head.extend(upload.admitted(frame_messages((frame,))))
                frame = await following()
            if whole and options.groupable:
                outcome, batches = await self._ingest.group_small(
                    options, head, upload.digest, abandoned
                )
            else:
                loop = asyncio.get_running_loop()
                rest = upload.admitted(
                    frame_messages(itertools.chain(crossing, bridged(following, loop)))
                )

                def write() -> tuple[WriteOutcome, int]:
                    if whole:
                        with self._slot(options, client):
                            return self._ingest.write_small(options, head, upload.digest, abandoned)
                    everything = itertools.chain(head, rest)
                    return self._buffered(options, everything, upload.digest, client, abandoned)

                run = contextvars.copy_context().run
                outcome, batches = await loop.run_in_executor(threads, run, write)
        reply = self._ingest.finish(options, outcome, batches, upload.received, started)
        log.debug("flight put committed", stream=options.stream, rows=reply.rows_processed)
        return reply

    def _slot(
        self, options: IngestOptions, client: str | None
    ) -> contextlib.AbstractContextManager[None]:
        """A streaming-writer slot for a small put that is not group-committed (it writes in a
        transaction of its own, as the same HTTP request would); none for one that is."""
        if options.groupable:
            return contextlib.nullcontext()
        return self._ingest.streaming_slot(client)

    def _buffered(
        self,
        options: IngestOptions,
        messages: Iterator[Message],
        digest: Callable[[], str],
        client: str | None,
        abandoned: Callable[[], bool],
    ) -> tuple[WriteOutcome, int]:
        """Read ``messages`` on this thread while DuckDB writes them on another, at most
        ``flight.upload_buffer_bytes`` of them between the two; only this thread reads the
        upload."""
        written: Future[tuple[WriteOutcome, int]] = Future()
        buffer = PutBuffer(self._flight.upload_buffer_bytes, self._metrics.put_wait_seconds.inc)
        with self._ingest.streaming_slot(client):
            run = contextvars.copy_context().run

            def write() -> None:
                try:
                    written.set_result(
                        run(self._ingest.write_stream, options, iter(buffer), digest, abandoned)
                    )
                except BaseException as exc:
                    written.set_exception(exc)
                finally:
                    buffer.stop()

            writer = threading.Thread(target=write, name="arrowport-flight-put", daemon=True)
            writer.start()
            drained = 0
            try:
                for message in messages:
                    # Stopped early (failed, or a duplicate delivery): its answer stands.
                    if written.done() or not buffer.put(message):
                        break
                    drained += message.body_length
                    if drained >= TRIM_EVERY_BYTES:
                        release_free_heap()
                        drained = 0
                # A cancelled call's stream ends as if finished: nothing more is written then.
                if not written.done() and abandoned():
                    raise TruncatedStream("the client cancelled the upload; nothing was written")
            except BaseException as exc:
                buffer.fail(exc)
                writer.join()
                raise
            buffer.finish()
            writer.join()
        return written.result()


# The most ``app_metadata`` one frame of a put may carry: the server never reads it, and a frame
# that carries nothing else is dropped, so more is only memory held for nothing.
MAX_APP_METADATA_BYTES = 1024**2


class PutCall:
    """A put's call as the put sees it: its frames as they arrive (each within
    ``stall_seconds`` of asking for it, and at least ``min_rate`` bytes a second over each such
    period), and whether the client has given up on it."""

    def __init__(
        self, requests: AsyncIterator[bytes], stall_seconds: float, min_rate: int = 0
    ) -> None:
        # Only what frames after the first carry of IPC messages counts toward the rate: the
        # rest is dropped.
        self._arrival = Arrival(
            requests, stall_seconds, "the upload", "nothing was written", min_rate, False
        )
        self._stall_seconds = stall_seconds
        self._first = True
        # Set when gRPC cancels the handler (the client cancelled or went away); gRPC's own
        # ``context.cancelled()`` does not say so on its asyncio server.
        self.cancelled = False
        # Whether the put writes what it carries: only then is the end of its stream waited
        # on (a Flight SQL put that binds a statement's parameters writes nothing).
        self.writes = True

    async def frame(self) -> Frame | None:
        """The upload's next frame that carries something, as it arrives; None once it has
        ended. Frames after the first that carry no IPC message (``app_metadata``, a descriptor,
        or nothing) are dropped here, and do not count as the upload arriving: a stream of them
        stalls it as silence would."""
        since = asyncio.get_running_loop().time()
        while True:
            raw = await self._arrival.next()
            if raw is None:
                if self.writes:
                    await asyncio.sleep(CANCEL_GRACE_SECONDS)  # see CANCEL_GRACE_SECONDS
                return None
            frame = parse_frame(raw)
            if len(frame.app_metadata) > MAX_APP_METADATA_BYTES:
                raise PayloadTooLarge(
                    f"a frame carries {len(frame.app_metadata)} bytes of app_metadata, over "
                    f"the {MAX_APP_METADATA_BYTES} this server takes (it does not read them)"
                )
            first, self._first = self._first, False
            if not first:  # a client sends its schema as it opens the put, its data later
                self._arrival.counted(frame.size)
            # A descriptor after the first frame is not read either: a stream of frames that
            # carry one alone had kept a put alive past its stall limit.
            if first or frame.header or frame.body:
                return frame
            if asyncio.get_running_loop().time() - since >= self._stall_seconds:
                raise self._arrival.stalled()

    def close(self) -> None:
        """The call is over: stop watching it for stalls."""
        self._arrival.close()

    def gone(self) -> bool:
        """Whether the client has given up on the call: asked on the writer's thread just
        before the commit."""
        return self.cancelled


def bridged(
    read: Callable[[], Coroutine[Any, Any, T | None]], loop: asyncio.AbstractEventLoop
) -> Iterator[T]:
    """What ``read`` returns (run on ``loop``) until None, for a thread other than the loop's,
    one item at a time; the upload ends truncated if the loop stops meanwhile (the server is
    shutting down)."""
    while (item := _awaited(asyncio.run_coroutine_threadsafe(read(), loop), loop)) is not None:
        yield item


# How often a thread waiting for the next frame looks whether the server's loop still runs.
_LOOP_CHECK_SECONDS = 1.0


def _awaited(pending: Future[T], loop: asyncio.AbstractEventLoop) -> T:
    while True:
        try:
            return pending.result(timeout=_LOOP_CHECK_SECONDS)
        except TimeoutError:
            if not loop.is_running():
                pending.cancel()
                raise TruncatedStream(
                    "the server stopped before the upload ended; nothing was written"
                ) from None


class _Upload:
    """A put's messages as they arrive: checked against the request's limits (before anything
    decodes them), counted, fingerprinted for idempotency keys, and held in memory against
    ``limits.max_inflight_bytes`` (``held``): each message until the upload is buffered for
    DuckDB's thread, then that buffer and two of its largest messages so far (one waiting for
    room, one being decoded), or what was held until then, if more."""

    def __init__(self, limits: Any, fingerprint: bool, held: Reservation) -> None:
        self._budget = PayloadBudget(limits)
        self._digest = hashlib.sha256() if fingerprint else None
        self._held = held
        self._buffering = False
        self._largest = 0
        self._checked_ahead = 0  # how many of the next messages were checked already
        self.received = 0
        self.messages = 0

    def check_ahead(self, frame: Frame) -> None:
        """Check the message ``frame`` carries against the limits now (as it is, unaligned),
        before :meth:`admitted` gets to it: it then counts it without checking it again."""
        for message in frame_messages((frame,), aligned=False):
            self._budget.admit(message)
            self._checked_ahead += 1

    def admitted(self, messages: Iterable[Message]) -> Iterator[Message]:
        for message in messages:
            if self._checked_ahead:
                self._checked_ahead -= 1
            else:
                self._budget.admit(message)
            size = len(message.metadata) + message.body_length
            if not self._buffering:
                self._held.grow(size)
                self._largest = max(self._largest, size)
            self.messages += 1
            self.received += size
            if self._digest is not None:
                self._digest.update(message.metadata)
                self._digest.update(message.body)
            yield message

    def head(self, messages: Iterator[Message], limit: int) -> tuple[list[Message], bool]:
        """The first messages, up to the one that passes ``limit`` bytes, and whether that was
        all of the upload."""
        head: list[Message] = []
        for message in messages:
            head.append(message)
            if self.received > limit:
                return head, False
        return head, True

    def buffering(self, buffer_bytes: int, waiting: int = 0) -> None:
        """From now on the upload goes through a buffer that holds ``buffer_bytes``: it counts
        that and two messages as large as the largest so far (``waiting``: the size of one not
        yet admitted), or what it holds already (``waiting`` among it) if more, and no longer
        each message. Called on the thread that owns the reservation, before any other thread
        reads the upload (never after: a cancelled call gives the reservation back while that
        thread still runs)."""
        largest = max(self._largest, waiting)
        self._held.grow(max(waiting, buffer_bytes + 2 * largest - self._held.size))
        self._buffering = True

    def digest(self) -> str:
        assert self._digest is not None
        return self._digest.hexdigest()
