"""What one ingest call counts: :class:`IngestRun` is the bookkeeping both clients share (which
sequence a request gets, which requests an earlier run already committed, and the running
:class:`IngestSummary`). How the data becomes requests is :mod:`arrowport.client._batches`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import pyarrow as pa

from arrowport.client._batches import Compression, Cutter, request_size
from arrowport.client._errors import RequestError
from arrowport.client._http import ARROW_STREAM, Attempts, Call, path_part
from arrowport.client._models import ProducerOffset, StreamInfo
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
        self._stream_mode: str | None = None  # learnt for data of more than one request
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
            nbytes=request_size(batches),
            skip=sequence < self._skip_below,
        )

    @property
    def needs_stream(self) -> bool:
        """Whether the stream's configuration must be learnt (:meth:`learn`) before data of
        more than one request is sent: the mode asked for, or the stream's, may replace or
        create the table."""
        return self._stream_mode is None and self.template.mode in (None, "replace", "create")

    def learn(self, stream: StreamInfo | None) -> None:
        """The stream's configuration, for data of more than one request, before any is sent
        (None: a server too old to say; the mode asked for decides alone).

        A replace or create (asked for, or the stream's own mode) applies to the data as a
        whole: its first request replaces or creates the table, the ones after it append. A
        locked stream refuses those appends, so such data is refused before anything of it is
        sent, rather than leaving the table replaced by its first request alone.
        """
        if stream is None:
            self._stream_mode = self.template.mode or "append"
            return
        mode = self.template.mode or stream.mode
        self._stream_mode = mode
        # A mode the locked stream is not locked to is the server's to refuse, with the first
        # request (nothing lands): it says which option differs.
        if mode in ("replace", "create") and stream.locked and mode == stream.mode:
            raise RequestError(
                "stream_locked",
                403,
                f"stream {self.stream!r} is locked to its configuration, so it takes mode "
                f"{mode} one request at a time: each request would {mode} the table, and this "
                "data is more than one request (request_rows, request_bytes); nothing was sent",
                {"stream": self.stream},
            )

    def call(self, planned: Planned, body: bytes) -> Call:
        mode = self.template.mode
        if self._stream_mode in ("replace", "create") and planned.index > 0:
            mode = "append"  # the first request replaced or created the table (see learn)
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

    def acknowledged(self, planned: Planned, body: bytes, answer: Any, attempts: Attempts) -> None:
        reply = IngestReply.from_json(answer)
        summary = self._summary
        # A duplicate is this call's own commit only if an earlier attempt may have made it.
        if reply.duplicate and not attempts.uncertain:
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
            retries=summary.retries + attempts.retries,
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
