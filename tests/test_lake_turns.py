"""Schema turns: a lake transaction that creates, replaces or alters a table runs while no other
statement of the process reads or drops a cached schema (DuckLake 1.5.5 otherwise lets its
commit read freed memory, and the process dies)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from arrowport.storage.lake_turns import Turns
from arrowport.storage.schema import arrow_columns
from arrowport.storage.table_writer import WritePolicy, reshapes
from tests.lake import OwnCatalog, lake_config

REPO = Path(__file__).resolve().parents[1]


def reshaping_load(beside: str, seconds: float, **settings: object) -> dict[str, Any]:
    """What ``tests.lake_reshaping_load`` did, in a process of its own."""
    lake = lake_config()["ducklake"] | settings
    ran = subprocess.run(
        [sys.executable, "-m", "tests.lake_reshaping_load", json.dumps(lake), str(seconds), beside],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert ran.returncode == 0, f"exit {ran.returncode}: {ran.stdout[-2000:]}{ran.stderr[-3000:]}"
    report: dict[str, Any] = json.loads(ran.stdout.strip().splitlines()[-1])
    assert report["failures"] == []
    assert report["done"]["replaces"] > 0
    return report


def test_a_table_replaced_over_and_over_while_read_does_not_kill_the_process() -> None:
    """On the code before schema turns, this process died (SIGSEGV in DuckLake's commit) in 3 of
    5 such 20-second runs, after 2-16 s; the bare pattern in plain DuckDB dies in seconds."""
    assert reshaping_load("reads", 15)["done"]["reads"] > 0


def test_a_replace_lands_beside_a_steady_stream_of_appends_to_another_table() -> None:
    """A commit that replaces a table writes more catalog rows than an append's, and lost the
    race for each next snapshot to appends committed meanwhile: DuckLake retried it ten times
    (~5.5 s), then it failed, every time (with Arrowport's retries too, the replace ended 503
    after a minute; without them, at once: both runs on the old code failed so). The node's
    other commits now wait for it."""
    assert reshaping_load("appends", 10, max_retries=0)["done"]["appends"] > 0


def test_an_exclusive_turn_waits_for_shared_ones_and_holds_new_ones_back() -> None:
    turns = Turns()
    order: list[str] = []
    reader_in = threading.Event()
    release_reader = threading.Event()

    def reader() -> None:
        with turns.shared():
            reader_in.set()
            release_reader.wait(10)
            order.append("first reader out")

    def writer() -> None:
        with turns.alone():
            order.append("writer in")
            time.sleep(0.05)
            order.append("writer out")

    def late_reader() -> None:
        with turns.shared():
            order.append("late reader in")

    first = threading.Thread(target=reader)
    first.start()
    assert reader_in.wait(10)
    alone = threading.Thread(target=writer)
    alone.start()
    time.sleep(0.05)  # the writer now waits for the first reader
    late = threading.Thread(target=late_reader)
    late.start()
    time.sleep(0.05)
    assert order == []  # the late reader waits behind the waiting writer
    release_reader.set()
    for thread in (first, alone, late):
        thread.join(10)
    assert order == ["first reader out", "writer in", "writer out", "late reader in"]


def test_turns_nest_within_a_thread() -> None:
    turns = Turns()
    with turns.alone(), turns.shared(), turns.shared():
        pass
    with turns.shared(), turns.shared():
        pass
    with turns.shared(), pytest.raises(RuntimeError), turns.alone():
        pass
    # Nothing is left held: another thread gets an exclusive turn at once.
    got = threading.Event()

    def alone() -> None:
        with turns.alone():
            got.set()

    thread = threading.Thread(target=alone)
    thread.start()
    thread.join(10)
    assert got.is_set()


def test_while_a_long_turn_is_held_new_shared_turns_do_not_queue_behind_a_waiting_writer() -> None:
    """Maintenance holds a long turn: a replace waiting for it must not hold every read back
    for as long; it goes first once the long turn has ended."""
    turns = Turns()
    long_in = threading.Event()
    end_long = threading.Event()
    order: list[str] = []

    def maintenance() -> None:
        with turns.shared(long=True):
            long_in.set()
            end_long.wait(10)
        order.append("long out")

    def writer() -> None:
        with turns.alone():
            order.append("writer in")

    long = threading.Thread(target=maintenance)
    long.start()
    assert long_in.wait(10)
    alone = threading.Thread(target=writer)
    alone.start()
    time.sleep(0.05)  # the writer now waits for the long turn
    with turns.shared():
        order.append("read meanwhile")
    end_long.set()
    for thread in (long, alone):
        thread.join(10)
    assert order == ["read meanwhile", "long out", "writer in"]


@pytest.mark.parametrize(
    ("mode", "policy", "incoming", "expected"),
    [
        ("replace", "strict", {"k": pa.int64()}, True),
        ("append", "strict", {"k": pa.int64()}, False),
        ("append", "evolve", {"k": pa.int64()}, False),  # nothing to alter: no turn alone
        ("append", "evolve", {"k": pa.int32()}, False),  # fits the wider column as it is
        ("append", "evolve", {"k": pa.int64(), "v": pa.string()}, True),  # adds a column
        ("append", "evolve", {"k": pa.float64()}, True),  # does not fit: fails anyway
        ("upsert", "evolve", {"k": pa.int64(), "v": pa.string()}, True),
    ],
)
def test_which_writes_reshape_a_table(
    mode: str, policy: str, incoming: dict[str, pa.DataType], expected: bool
) -> None:
    existing = arrow_columns(pa.schema({"k": pa.int64()}))
    write = WritePolicy(mode=mode, schema_policy=policy)  # type: ignore[arg-type]
    assert reshapes("t", write, pa.schema(incoming), existing) is expected
    assert reshapes("t", write, pa.schema(incoming), None)  # no table yet: it is created


def test_a_read_whose_catalog_goes_away_mid_transaction_does_not_abort_the_process(
    own_catalog: OwnCatalog,
) -> None:
    """Closing a cursor with its transaction still open rolls it back in DuckDB's destructor;
    with the catalog gone that rollback fails, and the process aborted (``terminate called
    after throwing ... Failed to execute query "ROLLBACK"``, seen in a soak while a test
    paused the catalog). The read now rolls back itself first, and is answered 503, since the
    catalog, not the query, is at fault."""
    settings = own_catalog.lake_config()["ducklake"]
    ran = subprocess.run(
        [sys.executable, "-m", "tests.lake_read_outage", json.dumps(settings)],
        cwd=REPO,
        env=os.environ | own_catalog.env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert ran.returncode == 0, f"exit {ran.returncode}: {ran.stdout[-2000:]}{ran.stderr[-3000:]}"
    lines = ran.stdout.strip().splitlines()
    assert lines[-1] == "alive"
    assert lines[-4] == "the read failed: storage_unavailable"  # not the query's fault
    assert lines[-3] == "in the transaction: 1 row"
    assert lines[-2] == "the transaction's query failed: storage_unavailable"
