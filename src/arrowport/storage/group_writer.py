"""Group commit: one writer thread merges concurrent small writes into one transaction.

A commit costs DuckDB milliseconds whatever its size, so one transaction per small request caps
throughput. Callers :meth:`GroupWriter.submit` a job and get a future; the writer takes everything
queued (up to ``max_requests`` / ``max_rows`` / ``max_bytes``), prepares each job (decoding happens here, off the
event loop) and writes them all in one transaction (the database merges appends of one table and
schema into one insert).
Every future is resolved only after the commit that contains its rows. Callers on an event loop
:meth:`GroupWriter.committed` instead: a group's answers then reach each loop in one wake-up,
not one per write.

If the group's transaction fails, each job is retried in a transaction of its own, so one bad
request never fails the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError, ThreadPoolExecutor
from dataclasses import dataclass, field

import pyarrow as pa
import structlog

from arrowport.config import GroupCommitSettings
from arrowport.errors import Overloaded, ShuttingDown
from arrowport.storage.delivery import Delivery
from arrowport.storage.interface import Storage
from arrowport.storage.table_writer import WritePolicy
from arrowport.storage.writes import LocksBusy, WriteJob, WriteOutcome

log = structlog.get_logger(__name__)


@dataclass
class PendingWrite:
    """A small write waiting for the group writer. ``prepare`` decodes the payload."""

    table: str
    policy: WritePolicy
    prepare: Callable[[], pa.Table]
    delivery: Delivery | None = None
    abandoned: Callable[[], bool] | None = None
    future: Future[WriteOutcome] = field(default_factory=Future)
    data: pa.Table | None = None
    # Set by :meth:`GroupWriter.committed`: the loop and its future that also get the answer.
    waiter: tuple[asyncio.AbstractEventLoop, asyncio.Future[WriteOutcome]] | None = None


_STOP = object()


class GroupWriter:
    def __init__(self, db: Storage, settings: GroupCommitSettings, max_queued: int) -> None:
        self._db = db
        self._settings = settings
        self._queue: queue.Queue[PendingWrite | object] = queue.Queue(maxsize=max_queued)
        self._carry: PendingWrite | None = None
        self._accepting = True
        self._submit_lock = threading.Lock()
        # Writes whose table is locked by a long write wait here, not on the writer thread.
        self._waiters = ThreadPoolExecutor(4, "arrowport-lock-waiter")
        self._thread = threading.Thread(
            target=self._run, name="arrowport-group-writer", daemon=True
        )
        self._thread.start()

    def submit(self, write: PendingWrite) -> Future[WriteOutcome]:
        with self._submit_lock:  # nothing can be queued behind the stop marker
            if not self._accepting:
                raise ShuttingDown("the server is shutting down; retry later")
            try:
                self._queue.put_nowait(write)
            except queue.Full:
                raise Overloaded(
                    "too many writes are queued; retry shortly", retry_after=1
                ) from None
        return write.future

    async def committed(self, write: PendingWrite) -> WriteOutcome:
        """Submit ``write`` and wait on the running loop for its commit. A cancelled wait
        withdraws the write unless its transaction has begun."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[WriteOutcome] = loop.create_future()
        write.waiter = (loop, waiter)
        self.submit(write)
        try:
            return await waiter
        except asyncio.CancelledError:
            write.future.cancel()
            raise

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    def stop(self) -> None:
        """Finish every queued write, then stop the thread."""
        with self._submit_lock:
            self._accepting = False
        self._queue.put(_STOP)
        self._thread.join()
        self._waiters.shutdown(wait=True)

    # -- writer thread -------------------------------------------------------------------------

    def _next_group(self, group: list[PendingWrite]) -> bool:
        """Fill ``group`` with the writes to commit together; True once the stop marker is
        reached. Each write joins ``group`` as it is taken, so that a failure here answers it."""
        first = self._carry if self._carry is not None else self._queue.get()
        self._carry = None
        if first is _STOP:
            return True
        assert isinstance(first, PendingWrite)
        group.append(first)
        deadline = time.monotonic() + self._settings.max_wait_ms / 1000
        # A write carried over from the last group was prepared already: its payload may be a
        # one-shot stream, so never decode it twice.
        if first.data is None:
            _prepare(first)
        rows, size = _size(first)
        while len(group) < self._settings.max_requests:
            try:
                remaining = deadline - time.monotonic()
                item = (
                    self._queue.get(timeout=remaining)
                    if remaining > 0
                    else (self._queue.get_nowait())
                )
            except queue.Empty:
                break
            if item is _STOP:
                return True
            assert isinstance(item, PendingWrite)
            group.append(item)
            _prepare(item)
            item_rows, item_size = _size(item)
            if (
                rows + item_rows > self._settings.max_rows
                or size + item_size > self._settings.max_bytes
            ):
                self._carry = group.pop()
                break
            rows += item_rows
            size += item_size
        return False

    def _run(self) -> None:
        stopping = False
        while not stopping:
            group: list[PendingWrite] = []
            try:
                stopping = self._next_group(group)
                ready = [w for w in group if w.data is not None and not w.future.done()]
                if ready:
                    self._commit(ready)
            except Exception as exc:  # never let one group stop the only writer
                log.exception("group writer failed; answering the group and carrying on")
                _answer_all([(write, exc) for write in group])
        # Writes that arrived after the stop marker still get an answer.
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, PendingWrite):
                _answer(item, ShuttingDown("the server is shutting down"))

    def _commit(self, group: list[PendingWrite], block: bool = False) -> None:
        # A write that waited for a lock (or a retry) may have been given up meanwhile.
        group = [write for write in group if not write.future.done()]
        if not group:
            return
        jobs = [_job(write) for write in group]
        try:
            outcomes = self._db.write(jobs, block=block)
        except LocksBusy as busy:
            # Another write (say, a large upload still arriving) is creating or changing a
            # table of this group: its writes wait on a thread of their own, the rest go on.
            waiting = [w for w in group if self._db.lock_names(_job(w)) & busy.names]
            for write in waiting:
                self._waiters.submit(self._commit, [write], True)
            ready = [w for w in group if w not in waiting]
            if ready:
                self._commit(ready)
            return
        except Exception as exc:
            if len(group) == 1 or isinstance(exc, Overloaded):
                # Overloaded: the storage refused for now (or could not say whether the commit
                # landed, on a lake): each write tried alone might land a second time.
                _answer_all([(write, exc) for write in group])
                return
            log.info("group commit failed; retrying its writes one by one", writes=len(group))
            for write in group:
                self._commit([write], block)
            return
        _answer_all(list(zip(group, outcomes, strict=True)))


Answer = tuple[PendingWrite, WriteOutcome | BaseException]


def _answer(write: PendingWrite, outcome: WriteOutcome | BaseException) -> None:
    _answer_all([(write, outcome)])


def _answer_all(answers: list[Answer]) -> None:
    """Resolve writes' futures (one whose caller gave up, cancelled, is left alone), and wake
    each event loop waiting on some of them once."""
    by_loop: dict[asyncio.AbstractEventLoop, list[Answer]] = {}
    for write, outcome in answers:
        with contextlib.suppress(InvalidStateError):
            if isinstance(outcome, BaseException):
                write.future.set_exception(outcome)
            else:
                write.future.set_result(outcome)
        if write.waiter is not None:
            by_loop.setdefault(write.waiter[0], []).append((write, outcome))
    for loop, waiting in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits any more
            loop.call_soon_threadsafe(_settle, waiting)


def _settle(answers: list[Answer]) -> None:
    """On a waiter's loop: hand each answer to its awaiting coroutine."""
    for write, outcome in answers:
        assert write.waiter is not None
        waiter = write.waiter[1]
        if waiter.done():
            continue
        if isinstance(outcome, StopIteration):  # which an asyncio future refuses to hold
            outcome = RuntimeError(f"write failed: {outcome!r}")
        if isinstance(outcome, BaseException):
            waiter.set_exception(outcome)
        else:
            waiter.set_result(outcome)


def _job(write: PendingWrite) -> WriteJob:
    assert write.data is not None
    return WriteJob(write.table, write.policy, write.data, write.delivery, write.abandoned)


def _prepare(write: PendingWrite) -> None:
    """Decode a write's payload; a failure answers that write alone."""
    try:
        write.data = write.prepare()
    except Exception as exc:
        _answer(write, exc)


def _size(write: PendingWrite) -> tuple[int, int]:
    """Rows and bytes of a prepared write (a failed one: none). Not ``nbytes``: pyarrow 26
    crashes computing it for a list of unions with null entries."""
    if write.data is None:
        return 0, 0
    return int(write.data.num_rows), int(write.data.get_total_buffer_size())
