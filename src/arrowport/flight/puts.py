"""Landing a Flight put: its frames as they arrive, checked and counted, in one transaction.

A small put (all of it within ``limits.small_body_bytes``) is group-committed like a small HTTP
body; a larger one is drained into a spool (:mod:`arrowport.flight.spool`) on the call's thread
while DuckDB writes it on another. Arrowport's own puts and Flight SQL's bulk ingestion both
land here.
"""

from __future__ import annotations

import contextvars
import hashlib
import itertools
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from typing import Any

import grpc
import structlog

from arrowport.errors import TruncatedStream
from arrowport.flight.frames import Frame, frame_messages, parse_frame
from arrowport.flight.spool import MessageSpool
from arrowport.ingest.ipc_messages import Message, PayloadBudget
from arrowport.ingest.streams import IngestOptions
from arrowport.memory import release_free_heap
from arrowport.options import IngestReply
from arrowport.services import Services
from arrowport.storage.database import WriteOutcome

log = structlog.get_logger("arrowport.flight")

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
        put group-committed, a larger one spooled while DuckDB writes it; the reply after the
        commit. Both Arrowport's own puts and Flight SQL's bulk ingestion come here."""
        self._ingest.admission.check_accepting()
        upload = _Upload(self._ingest.limits, options.idempotency_key is not None)
        messages = upload.admitted(frame_messages(frames))
        head, whole = upload.head(messages, self._small_body_bytes)
        if whole:  # a small upload, all here: group-committed like a small HTTP body
            with self._ingest.admission.holding(upload.received):
                outcome, batches = self._ingest.write_small(options, head, upload.digest, abandoned)
        else:
            outcome, batches = self._spooled(
                options, itertools.chain(head, messages), upload.digest, client, abandoned
            )
        reply = self._ingest.finish(options, outcome, batches, upload.received, started)
        log.debug("flight put committed", stream=options.stream, rows=reply.rows_processed)
        return reply

    def _spooled(
        self,
        options: IngestOptions,
        messages: Iterator[Message],
        digest: Callable[[], str],
        client: str | None,
        abandoned: Callable[[], bool],
    ) -> tuple[WriteOutcome, int]:
        """Drain ``messages`` into a spool on this thread while DuckDB writes them on another.
        Only this thread reads the upload: it must not be read once the handler has returned."""
        settings = self._flight
        written: Future[tuple[WriteOutcome, int]] = Future()
        with (
            self._ingest.streaming_slot(client),
            MessageSpool(settings.upload_buffer_bytes, settings.spool_dir) as spool,
        ):
            run = contextvars.copy_context().run

            def write() -> None:
                try:
                    written.set_result(
                        run(self._ingest.write_stream, options, iter(spool), digest, abandoned)
                    )
                except BaseException as exc:
                    written.set_exception(exc)

            writer = threading.Thread(target=write, name="arrowport-flight-put", daemon=True)
            writer.start()
            drained = 0
            try:
                for message in messages:
                    if written.done():  # failed, or a duplicate delivery: its answer stands
                        break
                    spool.put(message)
                    drained += message.body_length
                    if drained >= TRIM_EVERY_BYTES:
                        release_free_heap()
                        drained = 0
            except BaseException as exc:
                spool.fail(exc)
                writer.join()
                raise
            finally:
                self._metrics.spilled_batches.inc(spool.spilled_messages)
            spool.finish()
            writer.join()
        return written.result()


# A client that dies mid-put ends its request stream just like one that finished, and grpc
# learns that the call was cancelled a moment later (0.2-3 ms here): the put looks once more
# after a short wait, and again just before its commit.
_CANCEL_GRACE_SECONDS = 0.002


def put_frames(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[Frame]:
    """The upload's frames as they arrive; a cancelled call never looks like a finished one."""
    while True:
        try:
            raw = next(requests)
        except StopIteration:
            break
        except Exception:  # grpc.RpcError: the client cancelled or the connection broke
            raise TruncatedStream("the client cancelled the upload; nothing was written") from None
        yield parse_frame(raw)
    deadline = time.monotonic() + _CANCEL_GRACE_SECONDS
    while context.is_active() and time.monotonic() < deadline:
        time.sleep(0.0005)
    if not context.is_active():
        raise TruncatedStream("the client cancelled the upload; nothing was written")


class _Upload:
    """A put's messages as they arrive: checked against the request's limits (before anything
    decodes them), counted, and fingerprinted for idempotency keys."""

    def __init__(self, limits: Any, fingerprint: bool) -> None:
        self._budget = PayloadBudget(limits)
        self._digest = hashlib.sha256() if fingerprint else None
        self.received = 0
        self.messages = 0

    def admitted(self, messages: Iterable[Message]) -> Iterator[Message]:
        for message in messages:
            self._budget.admit(message)
            self.messages += 1
            self.received += len(message.metadata) + message.body_length
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

    def digest(self) -> str:
        assert self._digest is not None
        return self._digest.hexdigest()
