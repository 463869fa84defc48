"""Crash safety: producers keep sending while the server is killed with SIGKILL, again and again.

Each producer sends numbered 200-row batches with producer offsets. After every crash the server is
restarted on the same database file; each producer asks where it stands
(``GET /streams/{name}/producers/{id}``) and resumes from ``next_sequence``, resending whatever it
never got an answer for. Three producers send small bodies (the group writer), one sends bodies
over 1 MiB (the streaming path). At the end, every acknowledged batch is present exactly once, no batch is
present twice or in part, and the offsets the server keeps agree with the rows.

The kill moments come from a seeded generator (``ARROWPORT_CRASH_SEED``, default 20240611).
"""

from __future__ import annotations

import os
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import httpx
import pyarrow as pa

from tests.conftest import ARROW_STREAM, ipc_bytes
from tests.server import ArrowportProcess

STREAM = "crashes"
ROWS = 200
PRODUCERS = 4
CYCLES = 10
SEED = int(os.environ.get("ARROWPORT_CRASH_SEED", "20240611"))


def numbered_batch(producer: int, sequence: int) -> bytes:
    """200 rows; the last producer pads them past small_body_bytes so its bodies stream."""
    base = (producer * 1_000_000 + sequence) * ROWS
    padding = "x" * (6_000 if producer == PRODUCERS - 1 else 0)
    table = pa.table(
        {
            "producer": pa.array([producer] * ROWS, pa.int32()),
            "seq": pa.array([sequence] * ROWS, pa.int64()),
            "row_id": pa.array(range(base, base + ROWS), pa.int64()),
            "payload": pa.array([f"p{producer}-s{sequence}-r{i}{padding}" for i in range(ROWS)]),
        }
    )
    return ipc_bytes(table)


class Deployment:
    """The current server; producers wait here while it is down."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.db_path = workdir / "db.duckdb"
        self.generation = 0
        self.process: ArrowportProcess | None = None
        self._changed = threading.Condition()

    def start(self) -> None:
        process = ArrowportProcess(self.workdir / f"run{self.generation}", db_path=self.db_path)
        process.start(timeout=60)
        with self._changed:
            self.process = process
            self.generation += 1
            self._changed.notify_all()

    def kill(self) -> None:
        with self._changed:
            process, self.process = self.process, None
        assert process is not None
        process.kill()

    def current(self) -> tuple[int, str | None]:
        with self._changed:
            return self.generation, self.process.url if self.process else None

    def wait_after(self, generation: int, stop: threading.Event) -> tuple[int, str] | None:
        """Block until a server newer than ``generation`` is up (None once ``stop`` is set)."""
        with self._changed:
            while not stop.is_set():
                if self.process is not None and self.generation > generation:
                    return self.generation, self.process.url
                self._changed.wait(0.1)
        return None


@dataclass
class Producer:
    number: int
    acknowledged: set[int] = field(default_factory=set)
    resumes: int = 0
    lost_answers: int = 0
    unexpected: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"producer-{self.number}"

    def run(self, deployment: Deployment, stop: threading.Event) -> None:
        generation, url = deployment.current()
        next_sequence: int | None = None
        while not stop.is_set():
            if url is None:
                found = deployment.wait_after(generation, stop)
                if found is None:
                    return
                generation, url = found
            try:
                with httpx.Client(base_url=url, timeout=30) as http:
                    if next_sequence is None:
                        next_sequence = self._resume(http)
                    while not stop.is_set():
                        self._send(http, next_sequence)
                        next_sequence += 1
            except httpx.TransportError as exc:
                # The server died under us: whatever was in flight may or may not have landed.
                if not isinstance(exc, httpx.ConnectError):
                    self.lost_answers += 1
                next_sequence = None
                url = None
            except _Refused as refused:
                self.unexpected.append(str(refused))
                next_sequence = None
                time.sleep(0.05)

    def _resume(self, http: httpx.Client) -> int:
        response = http.get(f"/streams/{STREAM}/producers/{self.name}")
        if response.status_code != 200:
            raise _Refused(f"GET producers -> {response.status_code} {response.text}")
        self.resumes += 1
        next_sequence = response.json()["next_sequence"]
        return 0 if next_sequence is None else int(next_sequence)

    def _send(self, http: httpx.Client, sequence: int) -> None:
        response = http.post(
            f"/stream/{STREAM}",
            content=numbered_batch(self.number, sequence),
            params={"producer_id": self.name, "sequence": sequence},
            headers={"Content-Type": ARROW_STREAM},
        )
        if response.status_code != 200:
            raise _Refused(f"seq {sequence} -> {response.status_code} {response.text}")
        self.acknowledged.add(sequence)


class _Refused(Exception):
    pass


def test_kill_minus_nine_loses_no_acknowledged_batch_and_duplicates_none(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    deployment = Deployment(tmp_path)
    deployment.start()
    stop = threading.Event()
    producers = [Producer(number) for number in range(PRODUCERS)]
    threads = [
        threading.Thread(target=p.run, args=(deployment, stop), name=p.name) for p in producers
    ]
    for thread in threads:
        thread.start()
    try:
        for _ in range(CYCLES):
            time.sleep(rng.uniform(0.3, 2.0))
            deployment.kill()
            time.sleep(rng.uniform(0.0, 0.2))
            deployment.start()
        # A last stretch without crashes, so every producer resumes and makes progress.
        before = [len(p.acknowledged) for p in producers]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(
            len(p.acknowledged) < seen + 3 for p, seen in zip(producers, before, strict=True)
        ):
            time.sleep(0.1)
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    assert not any(thread.is_alive() for thread in threads)
    process = deployment.process
    assert process is not None
    with httpx.Client(base_url=process.url, timeout=30) as http:
        offsets = {
            p.number: http.get(f"/streams/{STREAM}/producers/{p.name}").json()["last_sequence"]
            for p in producers
        }
    assert process.stop() == 0

    with duckdb.connect(str(deployment.db_path), read_only=True) as db:
        per_batch = db.execute(
            f"SELECT producer, seq, count(*), count(DISTINCT row_id) FROM {STREAM} "
            "GROUP BY producer, seq ORDER BY producer, seq"
        ).fetchall()
        total, distinct_rows = db.execute(
            f"SELECT count(*), count(DISTINCT row_id) FROM {STREAM}"
        ).fetchone() or (0, 0)

    found: dict[int, list[int]] = {p.number: [] for p in producers}
    for producer, seq, rows, distinct in per_batch:
        assert (rows, distinct) == (ROWS, ROWS), f"producer {producer} seq {seq}: {rows} rows"
        found[producer].append(seq)
    acknowledged = sum(len(p.acknowledged) for p in producers)
    batches_found = sum(len(seqs) for seqs in found.values())
    print(
        f"\ncrash test (seed {SEED}): {CYCLES} kill -9 cycles, {PRODUCERS} producers, "
        f"{acknowledged} batches acknowledged, {batches_found} batches found, {total} rows, "
        f"{sum(p.lost_answers for p in producers)} requests cut off by a kill, "
        f"resumes {[p.resumes for p in producers]}"
    )
    for p in producers:
        assert p.unexpected == [], p.unexpected
        present = found[p.number]
        assert p.acknowledged <= set(present), sorted(p.acknowledged - set(present))
        # Offsets refuse gaps, so a producer's batches are one unbroken run from 0.
        assert present == list(range(len(present)))
        assert offsets[p.number] == present[-1]
        assert len(p.acknowledged) >= 3
    assert total == distinct_rows == ROWS * batches_found
