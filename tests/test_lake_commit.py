"""A lake commit whose answer is lost: the catalog committed it, the node never heard.

A TCP relay between a real lake (its PostgreSQL catalog from the test services) and the catalog
passes the commit through, then cuts the connection before PostgreSQL's reply reaches the node.
The write must be answered as landed, and its rows must be in the lake once — whether the rows
were still in memory (a group commit, which could be replayed) or a stream read once.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from collections.abc import Iterator

import pyarrow as pa
import pytest

from arrowport.config import DuckDBSettings, DuckLakeSettings
from arrowport.errors import StorageError, StorageUnavailable
from arrowport.storage.delivery import Delivery
from arrowport.storage.lake import Lake
from arrowport.storage.lake_catalog import catalog_lost
from arrowport.storage.table_writer import WritePolicy
from arrowport.storage.writes import WriteJob
from tests.lake import lake_config


class CommitReplyCutter:
    """Relays connections to PostgreSQL; once armed, lets the next lake commit through and
    drops every connection before its reply comes back."""

    def __init__(self, target_port: int) -> None:
        self._target = ("127.0.0.1", target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self.armed = False
        self.fired = 0
        self.drop_commit = False  # cut before the COMMIT reaches PostgreSQL: nothing commits
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self._target)
            cut = threading.Event()
            threading.Thread(
                target=self._relay, args=(client, server, cut, True), daemon=True
            ).start()
            threading.Thread(
                target=self._relay, args=(server, client, cut, False), daemon=True
            ).start()

    def _relay(
        self, src: socket.socket, dst: socket.socket, cut: threading.Event, up: bool
    ) -> None:
        committing = False
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                if cut.is_set():
                    break
                if up and self.armed and b"ducklake_snapshot_changes" in data:
                    committing = True
                if up and self.armed and committing and b"COMMIT" in data:
                    cut.set()  # the reply is dropped from now on
                    if not self.drop_commit:
                        dst.sendall(data)
                    cut.wait(0.3)  # PostgreSQL commits meanwhile
                    self.armed = False
                    self.fired += 1
                    break
                dst.sendall(data)
        for end in (src, dst):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._listener.close()


@pytest.fixture
def lake() -> Iterator[tuple[Lake, CommitReplyCutter]]:
    settings = lake_config()["ducklake"]
    dsn = settings["catalog"]
    port = re.search(r"port=(\d+)", dsn)
    assert port is not None
    cutter = CommitReplyCutter(int(port[1]))
    settings["catalog"] = re.sub(r"port=\d+", f"port={cutter.port}", dsn)
    opened = Lake(DuckDBSettings(path=":memory:"), DuckLakeSettings(**settings))
    try:
        opened.write([WriteJob("t", WritePolicy(), pa.table({"x": pa.array([0], pa.int64())}))])
        yield opened, cutter
    finally:
        opened.close()
        cutter.close()


def rows(lake: Lake) -> list[dict[str, int]]:
    with lake.cursor() as cur:
        found = cur.execute("SELECT x, count(*) AS n FROM t GROUP BY x ORDER BY x").fetchall()
    return [{"x": x, "n": n} for x, n in found]


@pytest.mark.parametrize("shape", ["in memory", "streamed"])
def test_a_commit_whose_reply_is_lost_is_answered_as_landed_and_lands_once(
    lake: tuple[Lake, CommitReplyCutter], shape: str
) -> None:
    target, cutter = lake
    table = pa.table({"x": pa.array([1, 2, 3], pa.int64())})
    data = (
        table
        if shape == "in memory"
        else pa.RecordBatchReader.from_batches(table.schema, table.to_batches())
    )
    cutter.armed = True
    [outcome] = target.write([WriteJob("t", WritePolicy(), data)])
    assert cutter.fired == 1
    assert not isinstance(outcome, Exception)
    assert outcome.rows == 3
    assert not outcome.duplicate
    assert rows(target) == [{"x": x, "n": 1} for x in range(4)]


def test_a_keyed_write_whose_reply_is_lost_is_its_own_original_answer(
    lake: tuple[Lake, CommitReplyCutter],
) -> None:
    target, cutter = lake
    table = pa.table({"x": pa.array([7, 8], pa.int64())})
    delivery = Delivery("t", idempotency_key="k-1", fingerprint=lambda: "f")
    cutter.armed = True
    [outcome] = target.write([WriteJob("t", WritePolicy(), table, delivery=delivery)])
    assert cutter.fired == 1
    assert not isinstance(outcome, Exception)
    assert (outcome.rows, outcome.duplicate) == (2, False)
    [again] = target.write([WriteJob("t", WritePolicy(), table, delivery=delivery)])
    assert not isinstance(again, Exception)
    assert again.duplicate
    assert rows(target) == [{"x": 0, "n": 1}, {"x": 7, "n": 1}, {"x": 8, "n": 1}]


@pytest.mark.parametrize("shape", ["in memory", "streamed"])
def test_a_landed_commit_whose_files_duckdb_deleted_is_not_answered_as_landed(
    lake: tuple[Lake, CommitReplyCutter], shape: str
) -> None:
    """Rows past DuckLake's inlining limit go to Parquet files, which DuckLake 1.5.5 deletes
    after any failed commit, a commit whose reply was lost included: the catalog then lists
    files the store does not have. Found by its claim, such a write was answered as landed;
    now the node looks for the files that snapshot added and answers 503 ``storage_error``
    naming the snapshot and the table."""
    target, cutter = lake
    table = pa.table({"x": pa.array(range(100, 1_100), pa.int64())})
    data = (
        table
        if shape == "in memory"
        else pa.RecordBatchReader.from_batches(table.schema, table.to_batches())
    )
    cutter.armed = True
    with pytest.raises(StorageError) as lost:
        target.write([WriteJob("t", WritePolicy(), data)])
    assert cutter.fired == 1
    message = lost.value.message
    assert "committed to the lake (snapshot " in message, message
    assert "DuckLake deleted the 1 file(s) it had written" in message, message
    assert "reads of 't' fail" in message, message


def test_a_commit_cut_off_unanswered_is_answered_as_maybe_landed(
    lake: tuple[Lake, CommitReplyCutter],
) -> None:
    """A commit that never reached PostgreSQL, its connection cut: to the node it is one
    whose answer was lost and whose claim is not (yet) in the catalog, so it may still land.
    A stream (not replayed) is answered 503 ``storage_unavailable`` (possibly landed: a client
    retries it with the same key or sequence), never ``overloaded``, which says nothing was
    written (a client then takes a duplicate answer to its retry for another sender's)."""
    target, cutter = lake
    table = pa.table({"x": pa.array([5, 6], pa.int64())})
    cutter.armed = cutter.drop_commit = True
    stream = pa.RecordBatchReader.from_batches(table.schema, table.to_batches())
    with pytest.raises(StorageUnavailable) as unsure:
        target.write([WriteJob("t", WritePolicy(), stream)])
    assert cutter.fired == 1
    assert "may have landed" in unsure.value.message, unsure.value.message
    assert rows(target) == [{"x": 0, "n": 1}]


@pytest.mark.parametrize(
    "message",
    [
        # As a catalog restart reported them, from a binder error, a delivery check and a commit.
        'Binder Error: Failed to get data file list from DuckLake: Failed to execute query "SELECT'
        ' …": server closed the connection unexpectedly',
        "Failed to get global stats information from DuckLake: server closed the connection "
        "unexpectedly\n\tThis probably means the server terminated abnormally",
        'TransactionContext Error: Failed to commit: Failed to execute query "ROLLBACK": no '
        "connection to the server",
        # libpq's words for a connection lost mid-query, over TLS, or a catalog restarting.
        "IO Error: could not receive data from server: Connection reset by peer",
        "SSL SYSCALL error: EOF detected",
        "SSL connection has been closed unexpectedly",
        "FATAL:  the database system is shutting down",
        "FATAL:  the database system is in recovery mode",
    ],
)
def test_a_lost_catalog_connection_is_the_lakes_failure_not_the_batchs(message: str) -> None:
    # They were 500 internal_error, or 422 invalid_value blaming the batch, during outages.
    assert catalog_lost(message)


def test_a_batch_error_is_not_taken_for_a_lost_catalog() -> None:
    assert not catalog_lost('Binder Error: Referenced column "nope" not found in FROM clause')
    assert not catalog_lost("Conversion Error: Could not convert string 'x' to INT32")
