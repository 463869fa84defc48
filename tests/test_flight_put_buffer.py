"""Flight uploads that outrun DuckDB hold their clients back: order, content, memory, errors.

The buffer between a put's reader and DuckDB is exercised on its own (where waiting is exactly
controlled) and through a real server, where a put is held back behind another put's table lock
so that its client must wait.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from arrowport.errors import TruncatedStream
from arrowport.flight.put_buffer import PutBuffer
from arrowport.ingest.ipc_messages import Message, PayloadLimits
from arrowport.ingest.ipc_stream import ViewReader, stream_messages
from arrowport.ingest.payload import IpcPayload
from tests.conftest import ipc_bytes, metric, query
from tests.server import ArrowportProcess

# -- the buffer on its own ---------------------------------------------------------------------

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


def size(message: Message) -> int:
    return len(message.metadata) + message.body_length


def test_messages_come_out_in_order_while_the_producer_waits_for_room() -> None:
    # Dictionaries change between batches: each must reach the consumer with its own batches.
    batches = [batch(i * 100, 100, ["a", "b"] if i % 2 else ["x", "y", "z"]) for i in range(6)]
    sent = messages(batches)
    buffer = PutBuffer(memory_bytes=max(size(m) for m in sent))
    received: list[Message] = []

    def consume() -> None:
        time.sleep(0.2)  # the producer fills the buffer meanwhile, and waits
        received.extend(buffer)

    consumer = threading.Thread(target=consume)
    consumer.start()
    for message in sent:
        assert buffer.put(message)
    buffer.finish()
    consumer.join(timeout=10)
    assert decoded(received) == pa.Table.from_batches(batches).to_pylist()
    assert buffer.waited_seconds >= 0.1


def waiting_producer(buffer: PutBuffer, message: Message, taken: list[bool]) -> threading.Thread:
    """A thread putting ``message`` into the full ``buffer``, checked to be waiting; what
    :meth:`PutBuffer.put` answers goes to ``taken``."""
    producer = threading.Thread(target=lambda: taken.append(buffer.put(message)))
    producer.start()
    producer.join(timeout=0.3)
    assert producer.is_alive()  # no room: it waits
    assert taken == []
    return producer


def test_a_full_buffer_holds_the_producer_until_the_consumer_takes_a_message() -> None:
    first, second = messages([batch(0, 100, ["a"])])[:2]
    buffer = PutBuffer(memory_bytes=size(first))
    assert buffer.put(first)
    taken: list[bool] = []
    producer = waiting_producer(buffer, second, taken)
    consumer = iter(buffer)
    assert next(consumer) is first
    producer.join(timeout=10)
    assert taken == [True]
    buffer.finish()
    assert list(consumer) == [second]
    assert buffer.waited_seconds >= 0.2


def test_a_message_larger_than_the_buffer_fits_when_nothing_else_waits() -> None:
    sent = messages([batch(0, 1000, ["a"])])
    buffer = PutBuffer(memory_bytes=0)
    consumer = iter(buffer)
    for message in sent:
        assert buffer.put(message)  # one always fits: it would wait forever otherwise
        assert next(consumer) is message
    assert buffer.waited_seconds == 0


def test_a_waiting_consumer_gets_the_producers_failure() -> None:
    failure = TruncatedStream("the client cancelled the upload; nothing was written")
    seen: list[BaseException] = []
    sent = messages([batch(0, 10, ["a"]), batch(10, 10, ["a"])])
    buffer = PutBuffer(memory_bytes=2**20)

    def consume() -> None:
        try:
            for _ in buffer:
                pass
        except TruncatedStream as exc:
            seen.append(exc)

    consumer = threading.Thread(target=consume)
    consumer.start()
    for message in sent[:3]:
        buffer.put(message)
    time.sleep(0.1)  # the consumer is now waiting for more
    buffer.fail(failure)
    consumer.join(timeout=10)
    assert seen == [failure]


def test_a_consumer_that_stops_releases_a_waiting_producer() -> None:
    first, second, third = messages([batch(0, 100, ["a"])])[:3]
    buffer = PutBuffer(memory_bytes=size(first))
    assert buffer.put(first)
    taken: list[bool] = []
    producer = waiting_producer(buffer, second, taken)
    buffer.stop()  # say, the write failed: nothing more will be taken
    producer.join(timeout=10)
    assert taken == [False]
    assert not buffer.put(third)


# -- through a real server ---------------------------------------------------------------------


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ArrowportProcess]:
    config = {"flight": {"upload_buffer_bytes": 0}}
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
        descriptor = flight.FlightDescriptor.for_path(table)
        self.writer, self.reader = client.do_put(descriptor, data.schema)
        self.writer.write_table(data, max_chunksize=10_000)  # ~3 MB: more than a small body
        time.sleep(1.0)  # the server starts its transaction (and takes the lock) meanwhile

    def finish(self) -> dict[str, object]:
        self.writer.done_writing()
        reply = self.reader.read()
        self.writer.close()
        assert reply is not None
        return json.loads(reply.to_pybytes())  # type: ignore[no-any-return]


class BackgroundPut:
    """A put of ``data`` to ``table`` sent on a thread of its own: :attr:`sent` is set once the
    client has sent all of it; :meth:`reply` waits for the server's answer."""

    def __init__(
        self, client: flight.FlightClient, table: str, data: pa.Table, chunk_rows: int
    ) -> None:
        self.sent = threading.Event()
        self._replies: list[dict[str, object]] = []
        self._thread = threading.Thread(target=self._put, args=(client, table, data, chunk_rows))
        self._thread.start()

    def _put(
        self, client: flight.FlightClient, table: str, data: pa.Table, chunk_rows: int
    ) -> None:
        writer, reader = client.do_put(flight.FlightDescriptor.for_path(table), data.schema)
        writer.write_table(data, max_chunksize=chunk_rows)
        self.sent.set()
        writer.done_writing()
        reply = reader.read()
        writer.close()
        assert reply is not None
        self._replies.append(json.loads(reply.to_pybytes()))

    def reply(self, timeout: float = 60) -> dict[str, object]:
        self._thread.join(timeout)
        assert len(self._replies) == 1
        return self._replies[0]


def put_and_close(client: flight.FlightClient, table: str, data: pa.Table) -> dict[str, object]:
    """Put ``data`` in 10,000-row batches; the call's error (raised when it is closed) if any."""
    writer, reader = client.do_put(flight.FlightDescriptor.for_path(table), data.schema)
    writer.write_table(data, max_chunksize=10_000)
    writer.done_writing()
    reply = reader.read()
    writer.close()
    assert reply is not None
    return json.loads(reply.to_pybytes())  # type: ignore[no-any-return]


def waited_seconds(http: httpx.Client) -> float:
    return metric(http, "arrowport_flight_put_wait_seconds_total")


def test_a_put_held_behind_a_lock_waits_and_lands_every_row(
    server: ArrowportProcess, client: flight.FlightClient, http: httpx.Client
) -> None:
    first = HeldPut(client, "held", rows_table(0, 100_000))
    second_data = rows_table(100_000, 400_000)  # ~10 MB: more than the window
    waited_before = waited_seconds(http)
    other = flight.connect(server.flight_url)
    second = BackgroundPut(other, "held", second_data, chunk_rows=5_000)
    # The second put's writer waits for the table's lock; its reader, and so its client, wait too.
    assert not second.sent.wait(1.0)
    assert metric(http, "arrowport_streaming_writes") == 2
    assert first.finish()["rows_processed"] == 100_000
    assert second.reply()["rows_processed"] == 400_000
    assert second.sent.is_set()
    assert metric(http, "arrowport_streaming_writes") == 0
    other.close()
    landed = query(http, "SELECT id, label, kind FROM held ORDER BY id")
    assert landed.num_rows == 500_000
    assert landed.column("id").to_pylist() == list(range(500_000))
    expected = pa.concat_tables([rows_table(0, 100_000), second_data])
    assert landed.column("label").to_pylist() == expected.column("label").to_pylist()
    assert landed.column("kind").to_pylist() == expected.column("kind").to_pylist()
    assert waited_seconds(http) - waited_before >= 0.5


def test_a_client_held_back_cannot_make_the_server_hold_its_upload(
    server: ArrowportProcess, client: flight.FlightClient, http: httpx.Client
) -> None:
    """Behind a lock, a 200 MB put waits in its client: the server reads at most its buffer
    and gRPC's window of it until the lock is free."""
    first = HeldPut(client, "bounded", pa.table({"id": pa.array(range(500_000), pa.int64())}))
    before = server.peak_rss()
    big = pa.table({"id": pa.array(range(25_000_000), pa.int64())})
    other = flight.connect(server.flight_url)
    second = BackgroundPut(other, "bounded", big, chunk_rows=100_000)
    assert not second.sent.wait(3.0)  # long enough to send it all, were the server reading it
    grown = server.peak_rss() - before
    assert first.finish()["rows_processed"] == 500_000
    assert second.reply(timeout=120)["rows_processed"] == 25_000_000
    other.close()
    assert query(http, "SELECT count(*) AS n FROM bounded").to_pylist() == [{"n": 25_500_000}]
    assert grown < 60 * 1024**2, f"the server grew {grown / 1024**2:.0f} MiB"


def test_a_put_held_back_does_not_hold_back_others_on_its_connection(
    server: ArrowportProcess, client: flight.FlightClient, http: httpx.Client
) -> None:
    """gRPC's windows are per call: a put whose reader waits fills its own, not the
    connection's, so the client's other calls on the same connection go on."""
    first = HeldPut(client, "locked", rows_table(0, 100_000))
    # On the same client (one connection), behind the lock.
    held = BackgroundPut(client, "locked", rows_table(100_000, 400_000), chunk_rows=5_000)
    assert not held.sent.wait(1.0)  # held back: its ~10 MB are more than the buffer and window
    # Meanwhile another put and a read, on the same connection, are answered.
    other = rows_table(500_000, 300_000)
    writer, reader = client.do_put(flight.FlightDescriptor.for_path("free"), SCHEMA)
    writer.write_table(other, max_chunksize=5_000)
    writer.done_writing()
    assert json.loads(reader.read().to_pybytes())["rows_processed"] == 300_000
    writer.close()
    listed = client.do_get(flight.Ticket(b"free")).read_all()
    assert listed.num_rows == 300_000
    assert not held.sent.is_set()  # still held back all along
    assert first.finish()["rows_processed"] == 100_000
    assert held.reply()["rows_processed"] == 400_000
    assert query(http, "SELECT count(*) AS n FROM locked").to_pylist() == [{"n": 500_000}]


def test_a_put_held_back_whose_client_dies_writes_nothing_and_frees_its_slot(
    tmp_path: Path,
) -> None:
    """A put held back behind a lock whose client dies gives its thread and streaming slot
    back while the lock is still held (not once the other write ends), and writes nothing."""
    config = {"flight": {"upload_buffer_bytes": 0}, "limits": {"max_streaming_writes": 2}}
    with (
        ArrowportProcess(tmp_path / "s", config=config, args=["--flight-port", "0"]) as server,
        flight.connect(server.flight_url) as client,
        httpx.Client(base_url=server.url, timeout=60) as http,
    ):
        first = HeldPut(client, "cancelled", rows_table(0, 100_000))  # the first slot
        # A second client process sends an upload to the locked table (the second slot), and
        # dies while held back.
        script = (
            "import os, sys, threading, pyarrow as pa, pyarrow.flight as fl\n"
            "c = fl.connect(sys.argv[1])\n"
            "t = pa.table({'id': pa.array(range(100_000, 3_100_000), pa.int64())})\n"
            "w, r = c.do_put(fl.FlightDescriptor.for_path('cancelled'), t.schema)\n"
            "threading.Timer(1.5, os._exit, (0,)).start()\n"
            "w.write_table(t, max_chunksize=5_000)\n"
            "os._exit(1)  # it was not held back\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", script, server.flight_url], timeout=60, check=False
        )
        assert done.returncode == 0, "the client was never held back"
        # With the lock still held, a streaming put to another table gets the dead put's slot.
        free = rows_table(0, 100_000)  # ~3 MB: more than a small body, so it streams
        deadline = time.monotonic() + 20
        while True:
            try:
                reply = put_and_close(client, "free", free)
                break
            except flight.FlightUnavailableError:
                assert time.monotonic() < deadline, "the dead put's slot was never given back"
                time.sleep(0.1)
        assert reply["rows_processed"] == 100_000
        assert first.finish()["rows_processed"] == 100_000
        landed = query(http, "SELECT count(*) AS n, max(id) AS top FROM cancelled").to_pylist()
        assert landed == [{"n": 100_000, "top": 99_999}]
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


def test_small_puts_given_up_while_waiting_for_a_lock_free_their_waiting_threads(
    server: ArrowportProcess, client: flight.FlightClient, http: httpx.Client
) -> None:
    """Small puts wait for a busy table's lock on a few threads of the group writer's; puts
    whose clients gave up stop waiting, so a later put's wait is not queued behind them."""
    first = HeldPut(client, "locked", rows_table(0, 100_000))
    small = rows_table(100_000, 100)
    for _ in range(6):  # more than the group writer's threads for such waits
        writer, reader = client.do_put(
            flight.FlightDescriptor.for_path("locked"),
            SCHEMA,
            options=flight.FlightCallOptions(timeout=0.5),
        )
        writer.write_table(small)
        writer.done_writing()
        assert reader.read() is None  # no answer: the deadline passed while it waited
        with pytest.raises(flight.FlightTimedOutError):
            writer.close()
    # Another table, held the same way: a small put to it waits for its lock too.
    second = HeldPut(client, "other", rows_table(0, 100_000))
    waiting = BackgroundPut(client, "other", small, chunk_rows=100)
    time.sleep(0.5)
    assert second.finish()["rows_processed"] == 100_000
    # Its lock is free now (the first table's is not): the small put lands.
    assert waiting.reply(timeout=10)["rows_processed"] == 100
    assert first.finish()["rows_processed"] == 100_000
    assert query(http, "SELECT count(*) AS n FROM locked").to_pylist() == [{"n": 100_000}]
    assert query(http, "SELECT count(*) AS n FROM other").to_pylist() == [{"n": 100_100}]
