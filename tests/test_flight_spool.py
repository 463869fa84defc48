"""Flight uploads that outrun DuckDB wait on disk: order, content, errors and clean-up.

The spool is exercised on its own (where spilling is exactly controlled) and through a real
server, where a put is held back behind another put's table lock so that everything it sends
must wait in the spool.
"""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from arrowport.errors import InsufficientStorage, StorageError, TruncatedStream
from arrowport.flight.spool import MessageSpool, remove_orphans
from arrowport.ingest.ipc_messages import Message, PayloadLimits
from arrowport.ingest.ipc_stream import ViewReader, stream_messages
from arrowport.ingest.payload import IpcPayload
from tests.conftest import ipc_bytes, query
from tests.server import ArrowportProcess

# -- the spool on its own ----------------------------------------------------------------------

SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("label", pa.string()),
        ("kind", pa.dictionary(pa.int32(), pa.string())),
    ]
)
LIMITS = PayloadLimits(2**40, 2**30, 1000)


def batch(start: int, rows: int, kinds: list[str]) -> pa.RecordBatch:
    ids = list(range(start, start + rows))
    kind = pa.DictionaryArray.from_arrays(
        pa.array([i % len(kinds) for i in ids], pa.int32()), pa.array(kinds)
    )
    return pa.record_batch([pa.array(ids), pa.array([f"row {i}" for i in ids]), kind], SCHEMA)


def messages(batches: list[pa.RecordBatch]) -> list[Message]:
    """The IPC messages of a stream of ``batches`` (schema, dictionaries, batches)."""
    data = ipc_bytes(pa.Table.from_batches(batches, SCHEMA))
    return list(stream_messages(ViewReader(data), LIMITS))


def decoded(received: list[Message]) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = (
        IpcPayload(iter(received), LIMITS, 1_000_000).stream.read_all().to_pylist()
    )
    return rows


def spool_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("arrowport-put-*"))


def test_messages_come_out_in_order_across_memory_and_disk(tmp_path: Path) -> None:
    # Dictionaries change between batches: each spilled one must come back with its own.
    batches = [batch(i * 100, 100, ["a", "b"] if i % 2 else ["x", "y", "z"]) for i in range(6)]
    sent = messages(batches)
    first = len(sent[0].metadata) + sent[0].body_length
    with MessageSpool(memory_bytes=first, directory=str(tmp_path)) as spool:
        for message in sent:
            spool.put(message)
        spool.finish()
        assert spool.spilled_messages == len(sent) - 1  # the first one stays in memory
        assert len(spool_files(tmp_path)) == 1
        received = list(spool)
    assert decoded(received) == pa.Table.from_batches(batches).to_pylist()
    assert spool_files(tmp_path) == []


def test_consumed_messages_free_room_in_memory(tmp_path: Path) -> None:
    sent = messages([batch(0, 100, ["a"])])
    largest = max(len(m.metadata) + m.body_length for m in sent)
    with MessageSpool(memory_bytes=largest, directory=str(tmp_path)) as spool:
        consumer = iter(spool)
        for message in sent:
            spool.put(message)
            assert next(consumer) is message  # taken at once: room for the next one
        spool.finish()
        assert list(consumer) == []
        assert spool.spilled_messages == 0
    assert spool_files(tmp_path) == []


def test_a_waiting_consumer_gets_the_producers_failure(tmp_path: Path) -> None:
    failure = TruncatedStream("the client cancelled the upload; nothing was written")
    seen: list[BaseException] = []
    sent = messages([batch(0, 10, ["a"]), batch(10, 10, ["a"])])
    with MessageSpool(memory_bytes=0, directory=str(tmp_path)) as spool:

        def consume() -> None:
            try:
                for _ in spool:
                    pass
            except TruncatedStream as exc:
                seen.append(exc)

        consumer = threading.Thread(target=consume)
        consumer.start()
        for message in sent[:3]:
            spool.put(message)
        time.sleep(0.1)  # the consumer is now waiting for more
        spool.fail(failure)
        consumer.join(timeout=10)
    assert seen == [failure]
    assert spool_files(tmp_path) == []


def test_a_spill_file_that_vanished_is_a_storage_error(tmp_path: Path) -> None:
    sent = messages([batch(0, 10, ["a"])])
    with MessageSpool(memory_bytes=0, directory=str(tmp_path)) as spool:
        spool.put(sent[0])
        spool.put(sent[1])  # spilled
        spool.finish()
        spool_files(tmp_path)[0].unlink()  # say, a temporary-file cleaner
        consumer = iter(spool)
        next(consumer)
        with pytest.raises(StorageError, match="cannot read back the spooled upload"):
            next(consumer)


def test_a_spool_directory_that_cannot_be_written_is_a_storage_error(tmp_path: Path) -> None:
    missing = tmp_path / "not-there"
    sent = messages([batch(0, 10, ["a"])])
    with MessageSpool(memory_bytes=0, directory=str(missing)) as spool:
        spool.put(sent[0])  # kept in memory
        with pytest.raises(StorageError, match=r"cannot spool the upload in .*not-there"):
            spool.put(sent[1])


def test_a_full_disk_is_insufficient_storage(tmp_path: Path) -> None:
    # A file-size limit makes writes fail as on a full disk (SIGXFSZ ignored, as the server does).
    previous_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    previous_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    sent = messages([batch(0, 10_000, ["a"])])
    try:
        with MessageSpool(memory_bytes=0, directory=str(tmp_path)) as spool:
            spool.put(sent[0])  # kept in memory
            resource.setrlimit(resource.RLIMIT_FSIZE, (1024, previous_limit[1]))
            spool.put(sent[1])  # the dictionary: small enough to fit
            with pytest.raises(InsufficientStorage, match="no room left in"):
                spool.put(sent[2])
        # Closing (with the disk still full) neither raises nor leaves the file behind.
        assert spool_files(tmp_path) == []
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, previous_limit)
        signal.signal(signal.SIGXFSZ, previous_handler)


def test_spill_files_of_dead_servers_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    orphan = tmp_path / f"arrowport-put-{dead.stdout.strip()}-abc123.arrows"
    legacy = tmp_path / "arrowport-put-k2j4h5.arrows"
    alive = tmp_path / f"arrowport-put-{os.getppid()}-def456.arrows"
    unrelated = tmp_path / "someone-else.arrows"
    for path in (orphan, legacy, alive, unrelated):
        path.write_bytes(b"x")
    assert remove_orphans(str(tmp_path)) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, unrelated.name])


# -- through a real server ---------------------------------------------------------------------


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "spool"
    directory.mkdir()
    return directory


@pytest.fixture
def server(tmp_path: Path, spool_dir: Path) -> Iterator[ArrowportProcess]:
    config = {"flight": {"upload_buffer_bytes": 0, "spool_dir": str(spool_dir)}}
    with ArrowportProcess(
        tmp_path / "server", config=config, args=["--flight-port", "0"]
    ) as process:
        yield process


@pytest.fixture
def client(server: ArrowportProcess) -> Iterator[flight.FlightClient]:
    connection = flight.connect(server.flight_url)
    yield connection
    connection.close()


@pytest.fixture
def http(server: ArrowportProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as connection:
        yield connection


def rows_table(start: int, rows: int) -> pa.Table:
    return pa.Table.from_batches([batch(start, rows, ["red", "green", "blue"])])


class HeldPut:
    """A put to a new table that has sent more than a small body and then waits: its
    transaction holds the table's lock until :meth:`finish`."""

    def __init__(self, client: flight.FlightClient, table: str, data: pa.Table) -> None:
        self.writer, self.reader = client.do_put(flight.FlightDescriptor.for_path(table), SCHEMA)
        self.writer.write_table(data, max_chunksize=10_000)  # ~3 MB: more than a small body
        time.sleep(1.0)  # the server starts its transaction (and takes the lock) meanwhile

    def finish(self) -> dict[str, object]:
        self.writer.done_writing()
        reply = self.reader.read()
        self.writer.close()
        assert reply is not None
        return json.loads(reply.to_pybytes())  # type: ignore[no-any-return]


def wait_for(condition: Callable[[], object], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def spilled_total(http: httpx.Client) -> float:
    text = http.get("/metrics").text
    found = re.search(r"^arrowport_flight_spilled_batches_total (\S+)$", text, re.M)
    assert found is not None
    return float(found.group(1))


def test_a_put_held_behind_a_lock_waits_on_disk_and_lands_every_row(
    server: ArrowportProcess, spool_dir: Path, client: flight.FlightClient, http: httpx.Client
) -> None:
    first = HeldPut(client, "held", rows_table(0, 100_000))
    second_data = rows_table(100_000, 200_000)
    replies: list[dict[str, object]] = []

    def second_put() -> None:
        other = flight.connect(server.flight_url)
        writer, reader = other.do_put(flight.FlightDescriptor.for_path("held"), SCHEMA)
        writer.write_table(second_data, max_chunksize=5_000)
        writer.done_writing()
        reply = reader.read()
        writer.close()
        assert reply is not None
        replies.append(json.loads(reply.to_pybytes()))
        other.close()

    before = set(spool_files(spool_dir))  # the first put's own, if it spilled
    sender = threading.Thread(target=second_put)
    sender.start()
    # The second put's writer waits for the table's lock; everything it sends meanwhile spills.
    wait_for(lambda: set(spool_files(spool_dir)) - before, "the second put to spill")
    assert first.finish()["rows_processed"] == 100_000
    sender.join(timeout=60)
    assert len(replies) == 1
    assert replies[0]["rows_processed"] == 200_000
    landed = query(http, "SELECT id, label, kind FROM held ORDER BY id")
    assert landed.num_rows == 300_000
    assert landed.column("id").to_pylist() == list(range(300_000))
    expected = pa.concat_tables([rows_table(0, 100_000), second_data])
    assert landed.column("label").to_pylist() == expected.column("label").to_pylist()
    assert landed.column("kind").to_pylist() == expected.column("kind").to_pylist()
    # Of the second put's 40 batches, all but the ~1 MiB read before the lock waited on disk.
    assert spilled_total(http) >= 20
    assert spool_files(spool_dir) == []


def test_a_cancelled_put_that_spilled_writes_nothing_and_leaves_no_file(
    server: ArrowportProcess, spool_dir: Path, client: flight.FlightClient, http: httpx.Client
) -> None:
    first = HeldPut(client, "cancelled", rows_table(0, 100_000))
    before = ",".join(p.name for p in spool_files(spool_dir))
    # A second client process sends an upload to the locked table, and dies once it spilled.
    script = (
        "import os, sys, time, pathlib, pyarrow as pa, pyarrow.flight as fl\n"
        "c = fl.connect(sys.argv[1])\n"
        "t = pa.table({'id': pa.array(range(100_000, 300_000), pa.int64())})\n"
        "w, r = c.do_put(fl.FlightDescriptor.for_path('cancelled'), t.schema)\n"
        "w.write_table(t, max_chunksize=5_000)\n"
        "before = set(sys.argv[3].split(','))\n"
        "while not {p.name for p in pathlib.Path(sys.argv[2]).iterdir()} - before:\n"
        "    time.sleep(0.05)\n"
        "time.sleep(0.5)\n"
        "os._exit(0)\n"
    )
    subprocess.run(
        [sys.executable, "-c", script, server.flight_url, str(spool_dir), before],
        check=True,
        timeout=60,
    )
    assert first.finish()["rows_processed"] == 100_000
    # Cut mid-stream: the call is cancelled, or fails (truncated_stream, or invalid_ipc when gRPC
    # reports the read first).
    wait_for(
        lambda: any(
            '"truncated_stream"' in line
            or '"invalid_ipc"' in line
            or "flight call cancelled" in line
            for line in server.lines
        ),
        "the cancelled put to fail",
    )
    landed = query(http, "SELECT count(*) AS n, max(id) AS top FROM cancelled").to_pylist()
    assert landed == [{"n": 100_000, "top": 99_999}]
    wait_for(lambda: not spool_files(spool_dir), "the spill file to be deleted")
    assert server.healthy()


def test_a_put_through_the_smallest_receive_window_lands_whole(tmp_path: Path) -> None:
    """gRPC's window is fixed at ``flight.receive_window_bytes``: even the smallest lets a put
    of many windows' worth through, every row in order."""
    config = {"flight": {"receive_window_bytes": 64 * 1024}}
    with ArrowportProcess(tmp_path / "s", config=config, args=["--flight-port", "0"]) as server:
        connection = flight.connect(server.flight_url)
        data = rows_table(0, 200_000)  # ~6 MB: about a hundred windows
        writer, reader = connection.do_put(flight.FlightDescriptor.for_path("windowed"), SCHEMA)
        writer.write_table(data, max_chunksize=25_000)
        writer.done_writing()
        assert json.loads(reader.read().to_pybytes())["rows_processed"] == 200_000
        writer.close()
        connection.close()
        with httpx.Client(base_url=server.url, timeout=60) as http:
            got = query(http, "SELECT id FROM windowed ORDER BY id")
        assert got.column("id").to_pylist() == data.column("id").to_pylist()
