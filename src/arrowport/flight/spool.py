"""A put's batches between the gRPC reader and DuckDB, in bounded memory.

gRPC sizes a stream's receive window from its bandwidth-delay estimate, and under a busy DuckDB
that estimate can reach hundreds of MB: a client then has that much of its upload queued in the
server's memory before the handler asks for it (pyarrow's Flight server exposes no gRPC setting
to cap it). So the handler drains gRPC as fast as batches arrive and hands them to DuckDB, on
another thread, through a :class:`BatchSpool`: up to ``memory_bytes`` of batches wait in memory,
and any more in an Arrow IPC file on disk, read back when DuckDB gets to them. Memory stays flat
for any upload size and any client speed; a spilled batch is read back into fresh, aligned
buffers, so only the batches kept in memory need :func:`arrowport.flight.alignment.aligned`.

Example::

    with BatchSpool(schema, memory_bytes=32 * 1024**2) as spool:
        # producer thread           # consumer thread
        spool.put(batch)            for batch in spool: ...
        spool.finish()              # (or spool.fail(exc): the consumer raises exc)
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa

from arrowport.errors import InsufficientStorage, StorageError, is_disk_full


class BatchSpool:
    """A first-in, first-out queue of record batches from one producer to one consumer thread;
    at most ``memory_bytes`` of them wait in memory (one batch always may), the rest on disk."""

    def __init__(
        self,
        schema: pa.Schema,
        memory_bytes: int,
        directory: str | None = None,
        keep: Callable[[pa.RecordBatch], pa.RecordBatch] = lambda batch: batch,
        pool: pa.MemoryPool | None = None,
    ) -> None:
        self.schema = schema
        self._memory_bytes = memory_bytes
        self._directory = directory
        self._keep = keep  # applied to each batch kept in memory
        self._pool = pool  # where spilled batches are read back to
        self._cond = threading.Condition()
        # (batch, its size) in memory, or (None, 0): the next batch of the spill file.
        self._queue: deque[tuple[pa.RecordBatch | None, int]] = deque()
        self._in_memory = 0
        self._finished = False
        self._failure: BaseException | None = None
        self._sink: pa.NativeFile | None = None
        self._writer: pa.ipc.RecordBatchStreamWriter | None = None
        self._source: pa.NativeFile | None = None
        self._reader: pa.ipc.RecordBatchStreamReader | None = None
        self._path: str | None = None
        self.spilled_batches = 0

    # -- producer ------------------------------------------------------------------------------

    def put(self, batch: pa.RecordBatch) -> None:
        size = batch.nbytes
        with self._cond:
            spill = self._in_memory > 0 and self._in_memory + size > self._memory_bytes
        if spill:
            self._spill(batch)
            entry: tuple[pa.RecordBatch | None, int] = (None, 0)
        else:
            entry = (self._keep(batch), size)
        with self._cond:
            self._in_memory += entry[1]
            self._queue.append(entry)
            self._cond.notify_all()

    def finish(self) -> None:
        """No more batches: the consumer ends after the queued ones."""
        with self._cond:
            self._finished = True
            self._cond.notify_all()

    def fail(self, exc: BaseException) -> None:
        """The upload failed: the consumer raises ``exc`` at its next batch."""
        with self._cond:
            self._failure = exc
            self._cond.notify_all()

    def _spill(self, batch: pa.RecordBatch) -> None:
        try:
            self._write(batch)
        except (OSError, pa.ArrowException) as exc:
            where = self._directory or tempfile.gettempdir()
            if is_disk_full(exc):
                raise InsufficientStorage(f"no room left in {where} to spool the upload") from exc
            raise StorageError(f"cannot spool the upload in {where}: {exc}") from exc
        self.spilled_batches += 1

    def _write(self, batch: pa.RecordBatch) -> None:
        if self._writer is None:
            fd, self._path = tempfile.mkstemp(
                prefix="arrowport-put-", suffix=".arrows", dir=self._directory
            )
            os.close(fd)
            self._sink = pa.OSFile(self._path, "wb")
            self._writer = pa.ipc.new_stream(self._sink, self.schema)
        # Written straight from the batch's buffers (aligned or not) with unbuffered writes: once
        # this returns, the bytes are in the file for the consumer's own handle to read.
        self._writer.write_batch(batch)

    # -- consumer ------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        while True:
            with self._cond:
                while not self._queue and not self._finished and self._failure is None:
                    self._cond.wait()
                if self._failure is not None:
                    raise self._failure
                if not self._queue:
                    return
                batch, size = self._queue.popleft()
                self._in_memory -= size
            yield self._read_spilled() if batch is None else batch

    def _read_spilled(self) -> pa.RecordBatch:
        try:
            if self._reader is None:
                assert self._path is not None
                self._source = pa.OSFile(self._path, "rb", memory_pool=self._pool)
                self._reader = pa.ipc.open_stream(self._source)
            batch: pa.RecordBatch = self._reader.read_next_batch()
        except (OSError, pa.ArrowException, StopIteration) as exc:
            raise StorageError(f"cannot read back the spooled upload: {exc}") from exc
        return batch

    # -- lifecycle -----------------------------------------------------------------------------

    def close(self) -> None:
        """Delete the spill file. Call once both threads are done with the spool; never raises
        (the upload's own outcome, success or error, is what the client must hear)."""
        # The writer is dropped, not closed: closing it would write the end-of-stream marker,
        # which nothing reads, and fails on a full disk.
        self._writer = self._reader = None
        try:
            for handle in (self._sink, self._source):
                if handle is not None:
                    with contextlib.suppress(OSError, pa.ArrowException):
                        handle.close()
        finally:
            self._sink = self._source = None
            if self._path is not None:
                with contextlib.suppress(OSError):
                    Path(self._path).unlink(missing_ok=True)
                self._path = None

    def __enter__(self) -> BatchSpool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
