"""The group writer's answers to callers on an event loop (:meth:`GroupWriter.committed`).

In process, on a real database: the writer is held on a write whose decoding waits for the test,
so what is queued behind it stays queued until the test lets it go.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pyarrow as pa
import pytest

from arrowport.config import GroupCommitSettings
from arrowport.errors import InvalidIPC, StorageUnavailable
from arrowport.storage.database import Database
from arrowport.storage.group_writer import GroupWriter, PendingWrite
from arrowport.storage.table_writer import WritePolicy
from arrowport.storage.writes import WriteJob


@pytest.fixture
def writer(db: Database) -> Iterator[GroupWriter]:
    group_writer = GroupWriter(db, GroupCommitSettings(), max_queued=100)
    try:
        yield group_writer
    finally:
        group_writer.stop()


def rows(db: Database, table: str) -> int | None:
    with db.cursor() as cur:
        found = cur.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [table]
        ).fetchone()
        if found is None or found[0] == 0:
            return None
        counted = cur.execute(f'SELECT count(*) FROM "{table}"').fetchone()
        return None if counted is None else int(counted[0])


def write(table: str, n: int, gate: threading.Event | None = None) -> PendingWrite:
    data = pa.table({"id": list(range(n))})

    def prepare() -> pa.Table:
        if gate is not None:
            assert gate.wait(30)
        return data

    return PendingWrite(table, WritePolicy(), prepare)


def held(writer: GroupWriter) -> threading.Event:
    """Occupy the writer with a write that decodes only once the returned event is set."""
    gate = threading.Event()
    writer.submit(write("holder", 1, gate))
    for _ in range(3000):  # until the writer has taken it
        if writer.queued == 0:
            return gate
        time.sleep(0.01)
    raise AssertionError("the writer did not take the first write")


async def until_queued(writer: GroupWriter, count: int) -> None:
    for _ in range(3000):
        if writer.queued == count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{writer.queued} writes queued, expected {count}")


def test_a_group_answers_every_waiter_on_its_loop(writer: GroupWriter, db: Database) -> None:
    async def main() -> list[int]:
        gate = held(writer)
        waits = [asyncio.ensure_future(writer.committed(write("grouped", 10))) for _ in range(5)]
        await until_queued(writer, 5)
        gate.set()
        return [outcome.rows for outcome in await asyncio.gather(*waits)]

    assert asyncio.run(main()) == [10] * 5
    assert rows(db, "grouped") == 50


def test_a_failed_write_raises_in_its_waiter_alone(writer: GroupWriter, db: Database) -> None:
    def broken() -> pa.Table:
        raise InvalidIPC("not an Arrow stream")

    async def main() -> tuple[BaseException | int, int]:
        bad = asyncio.ensure_future(writer.committed(PendingWrite("mixed", WritePolicy(), broken)))
        good = asyncio.ensure_future(writer.committed(write("mixed", 3)))
        failed: BaseException | int
        try:
            failed = (await bad).rows
        except InvalidIPC as exc:
            failed = exc
        return failed, (await good).rows

    failed, landed = asyncio.run(main())
    assert isinstance(failed, InvalidIPC)
    assert landed == 3
    assert rows(db, "mixed") == 3


def test_a_cancelled_wait_withdraws_a_queued_write(writer: GroupWriter, db: Database) -> None:
    async def main() -> int:
        gate = held(writer)
        withdrawn = asyncio.ensure_future(writer.committed(write("withdrawn", 7)))
        await until_queued(writer, 1)
        withdrawn.cancel()
        with pytest.raises(asyncio.CancelledError):
            await withdrawn
        gate.set()
        # Queued after the withdrawn write: once it is answered, the writer has passed it.
        return (await writer.committed(write("after", 2))).rows

    assert asyncio.run(main()) == 2
    assert rows(db, "withdrawn") is None
    assert rows(db, "after") == 2


def test_a_group_the_storage_refused_for_now_is_answered_whole(
    writer: GroupWriter, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refusal for now (a lake that could not say whether the group's commit landed) is the
    answer of every write of the group: trying each alone could land one a second time."""
    calls: list[int] = []
    real_write = db.write

    def refusing(jobs: list[WriteJob], *args: object, **kwargs: object) -> object:
        if any(job.table == "refused" for job in jobs):
            calls.append(len(jobs))
            raise StorageUnavailable("the lake could not be reached")
        return real_write(jobs, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(db, "write", refusing)

    async def main() -> list[BaseException | int]:
        gate = held(writer)
        waits = [asyncio.ensure_future(writer.committed(write("refused", 4))) for _ in range(3)]
        await until_queued(writer, 3)
        gate.set()
        return await asyncio.gather(*waits, return_exceptions=True)

    answers = asyncio.run(main())
    assert all(isinstance(answer, StorageUnavailable) for answer in answers)
    assert calls == [4]  # one attempt of the group (the holder too), none of its writes alone
