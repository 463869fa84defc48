"""Many nodes, one DuckLake: exactly once across nodes, under SIGKILL, races and catalog outages.

Every node is a real ``arrowport serve`` process on a lake with its catalog in the test services'
PostgreSQL (a test that stops or freezes the catalog starts a PostgreSQL of its own) and its data
in their S3 server. What landed is counted from the lake afterwards.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pytest
import yaml

from arrowport.storage.lake_catalog import CatalogLocation, catalog_lock
from tests.conftest import ARROW_STREAM, ipc_bytes
from tests.lake import OwnCatalog, lake_config, new_lake_name, services
from tests.server import ArrowportProcess


class Cluster:
    """Nodes of one lake; a node can be killed with SIGKILL and started again (on a new port)."""

    def __init__(self, root: Path, size: int, **ducklake: Any) -> None:
        self.config = lake_config(new_lake_name("cluster"), **ducklake)
        self.nodes = [ArrowportProcess(root / f"node{i}", config=self.config) for i in range(size)]
        self._lock = threading.Lock()

    def start(self) -> Cluster:
        # The first node creates the lake; the others then attach to it.
        self.nodes[0].start(timeout=60)
        for node in self.nodes[1:]:
            node.start(timeout=60)
        return self

    def urls(self) -> list[str]:
        with self._lock:
            return [node.url for node in self.nodes if node.alive() and node.ready]

    def kill_and_restart(self, index: int) -> None:
        node = self.nodes[index]
        with self._lock:
            node.kill()
        node.start(timeout=60)

    def stop(self) -> None:
        for node in self.nodes:
            if node.alive():
                node.stop(60)


@pytest.fixture
def cluster3(tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path, 3).start()
    try:
        yield cluster
    finally:
        cluster.stop()


def batch(producer: int, sequence: int, rows: int) -> bytes:
    return ipc_bytes(
        pa.table(
            {
                "producer": pa.array([producer] * rows, pa.int32()),
                "sequence": pa.array([sequence] * rows, pa.int32()),
                "row": pa.array(range(rows), pa.int32()),
            }
        )
    )


def count_by_batch(url: str, table: str) -> dict[tuple[int, int], int]:
    response = httpx.post(
        url + "/query",
        json={"sql": f"SELECT producer, sequence, count(*) AS n FROM {table} GROUP BY ALL"},
        headers={"Accept": "application/json"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    return {(r["producer"], r["sequence"]): r["n"] for r in response.json()["rows"]}


def test_three_nodes_eight_producers_with_kills_land_every_batch_once(cluster3: Cluster) -> None:
    producers, batches, rows = 8, 12, 50
    acknowledged: dict[tuple[int, int], bool] = {}
    failures: list[str] = []
    stop_chaos = threading.Event()

    def produce(producer: int) -> None:
        rng = random.Random(producer)
        for sequence in range(batches):
            body = batch(producer, sequence, rows)
            # Half the producers send an idempotency key too; all send producer offsets.
            headers = {"Content-Type": ARROW_STREAM}
            if producer % 2:
                headers["Idempotency-Key"] = f"p{producer}-s{sequence}"
            params = {"producer_id": f"producer-{producer}", "sequence": str(sequence)}
            for attempt in range(60):
                urls = cluster3.urls()
                if not urls:
                    time.sleep(0.5)
                    continue
                url = urls[(producer + attempt) % len(urls)] if attempt else rng.choice(urls)
                try:
                    answer = httpx.post(
                        url + "/stream/events",
                        content=body,
                        params=params,
                        headers=headers,
                        timeout=30,
                    )
                except httpx.HTTPError:
                    continue  # the node died under us: the next attempt goes elsewhere
                if answer.status_code == 200:
                    acknowledged[(producer, sequence)] = True
                    break
                if answer.status_code not in (503, 502, 504):
                    failures.append(f"{producer}/{sequence}: {answer.status_code} {answer.text}")
                    break
                time.sleep(0.2)
            else:
                failures.append(f"{producer}/{sequence}: no node took it")

    def chaos() -> None:
        rng = random.Random(7)
        while not stop_chaos.wait(rng.uniform(1.5, 3.0)):
            cluster3.kill_and_restart(rng.randrange(len(cluster3.nodes)))

    chaos_thread = threading.Thread(target=chaos)
    threads = [threading.Thread(target=produce, args=(p,)) for p in range(producers)]
    chaos_thread.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(600)
    stop_chaos.set()
    chaos_thread.join(120)
    assert not failures, failures
    assert len(acknowledged) == producers * batches
    landed = count_by_batch(cluster3.urls()[0], "events")
    # Every acknowledged batch once, whole; nothing else.
    assert landed == {key: rows for key in acknowledged}


def test_two_nodes_given_one_key_at_the_same_instant_land_it_once(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, 2).start()
    try:
        a, b = cluster.urls()
        for round_ in range(8):
            barrier = threading.Barrier(2)
            answers: list[dict[str, Any]] = []

            def send(
                url: str,
                round_: int = round_,
                barrier: threading.Barrier = barrier,
                answers: list[dict[str, Any]] = answers,
            ) -> None:
                body = batch(0, round_, 25)
                barrier.wait()
                response = httpx.post(
                    url + "/stream/raced",
                    content=body,
                    headers={"Content-Type": ARROW_STREAM, "Idempotency-Key": f"race-{round_}"},
                    timeout=60,
                )
                assert response.status_code == 200, response.text
                answers.append(response.json())

            senders = [threading.Thread(target=send, args=(url,)) for url in (a, b)]
            for sender in senders:
                sender.start()
            for sender in senders:
                sender.join(120)
            assert sorted(answer["duplicate"] for answer in answers) == [False, True]
            assert {answer["rows_processed"] for answer in answers} == {25}
        assert count_by_batch(a, "raced") == {(0, r): 25 for r in range(8)}
    finally:
        cluster.stop()


def test_a_catalog_outage_gives_clear_errors_writes_nothing_partial_and_recovers(
    tmp_path: Path, own_catalog: OwnCatalog
) -> None:
    config = own_catalog.lake_config()
    node = ArrowportProcess(tmp_path / "node", config=config).start(timeout=60)
    acknowledged = 0
    try:
        with httpx.Client(base_url=node.url, timeout=60) as http:

            def send(sequence: int) -> httpx.Response:
                return http.post(
                    "/stream/outage",
                    content=batch(0, sequence, 40),
                    params={"producer_id": "p", "sequence": str(sequence)},
                    headers={"Content-Type": ARROW_STREAM},
                )

            assert send(0).status_code == 200
            acknowledged += 1
            own_catalog.control("pause")
            try:
                refused = send(1)
                assert refused.status_code == 503, refused.text
                assert refused.json()["code"] == "storage_unavailable"
                assert "retry-after" in refused.headers
                assert "password" not in refused.text
                assert http.get("/ready").status_code == 503
                assert http.get("/health").status_code == 200
            finally:
                own_catalog.control("resume")
            deadline = time.monotonic() + 60
            while http.get("/ready").status_code != 200 and time.monotonic() < deadline:
                time.sleep(0.5)
            for sequence in (1, 2):
                answer = send(sequence)
                assert answer.status_code == 200, answer.text
                acknowledged += 1
            assert count_by_batch(node.url, "outage") == {(0, s): 40 for s in range(3)}
    finally:
        node.stop(60)
    assert acknowledged == 3


def test_a_hung_catalog_makes_ready_answer_503_promptly_and_recover(
    tmp_path: Path, own_catalog: OwnCatalog
) -> None:
    config = own_catalog.lake_config()
    node = ArrowportProcess(tmp_path / "node", config=config).start(timeout=60)
    try:
        with httpx.Client(base_url=node.url, timeout=60) as http:
            assert http.get("/ready").status_code == 200
            own_catalog.control("freeze")
            try:
                # The first call may be the one left asking the catalog; later ones answer at
                # once, and 503 once that question has waited past the catalog's patience
                # (it used to hang every call for as long as the catalog did).
                deadline = time.monotonic() + 60
                while True:
                    assert time.monotonic() < deadline, "/ready did not turn 503"
                    try:
                        answer = http.get("/ready", timeout=3)
                    except httpx.TimeoutException:
                        continue
                    if answer.status_code == 503:
                        break
                    time.sleep(0.5)
                assert "catalog has not answered" in answer.json()["message"]
                assert http.get("/health").status_code == 200
            finally:
                own_catalog.control("thaw")
            deadline = time.monotonic() + 60
            while http.get("/ready").status_code != 200:
                assert time.monotonic() < deadline, "/ready stayed 503 with the catalog back"
                time.sleep(0.5)
            landed = http.post(
                "/stream/hungcat", content=batch(0, 0, 40), headers={"Content-Type": ARROW_STREAM}
            )
            assert landed.status_code == 200, landed.text
    finally:
        node.stop(60)


def test_a_node_cannot_start_on_an_unreachable_catalog(tmp_path: Path) -> None:
    config = lake_config()
    config["ducklake"]["catalog"] = (
        "postgres:dbname=nowhere host=127.0.0.1 port=1 user=nobody password=hunter2"
    )
    node = ArrowportProcess(tmp_path / "node", config=config)
    with pytest.raises(RuntimeError, match="exited during start-up"):
        node.start(timeout=60)
    assert node.proc is not None
    assert node.proc.wait(30) != 0
    output = "\n".join(node.lines)
    assert "cannot open the lake" in output
    assert "hunter2" not in output
    assert "Traceback" not in output


def test_maintenance_while_nodes_write_keeps_every_row_with_fewer_files(tmp_path: Path) -> None:
    # Files are deleted after a while longer than any commit here takes: a file whose commit is
    # still being retried is an orphan to the catalog until then (see delete_files_after).
    cluster = Cluster(tmp_path, 2, maintenance_interval_seconds=2, delete_files_after="1 minute")
    cluster.start()
    try:
        sent = 0
        with httpx.Client(timeout=60) as http:
            for sequence in range(40):
                url = cluster.urls()[sequence % 2]
                answer = http.post(
                    url + "/stream/maintained",
                    content=batch(1, sequence, 30),
                    headers={"Content-Type": ARROW_STREAM},
                )
                assert answer.status_code == 200, answer.text
                sent += 30
            # Runs counted by either node, and the files the lake reports (refreshed after a
            # run and every few seconds): 40 commits were 40 files before merging.
            deadline = time.monotonic() + 60
            runs, files = 0.0, float("inf")
            while time.monotonic() < deadline and not (runs >= 2 and files < 40):
                time.sleep(1)
                scraped = [http.get(url + "/metrics").text for url in cluster.urls()]
                runs = sum(
                    metric(text, "arrowport_lake_maintenance_runs_ok_total") for text in scraped
                )
                files = metric(scraped[0], "arrowport_lake_data_files")
        # The nodes' own account of their maintenance, should the lake not have been maintained.
        account = "\n".join(
            line
            for node in cluster.nodes
            for line in node.lines
            if "lake maint" in line or "housekeeping" in line
        )
        assert runs >= 2, account
        assert files < 40, account
        total = sum(count_by_batch(cluster.urls()[0], "maintained").values())
        assert total == sent
    finally:
        cluster.stop()


def test_maintenance_that_expires_snapshots_succeeds(tmp_path: Path) -> None:
    """Expiring snapshots answers with their times (TIMESTAMPTZ), which DuckDB's Python client
    could not turn into Python objects without pytz: every run that had a snapshot old enough to
    expire failed, and the steps after it (old files, delivery state) never ran."""
    cluster = Cluster(
        tmp_path,
        1,
        maintenance_interval_seconds=1,
        expire_snapshots_after="1 second",
        delete_files_after="1 minute",
    )
    cluster.start()
    try:
        [url] = cluster.urls()
        with httpx.Client(timeout=60) as http:
            for sequence in range(10):
                answer = http.post(
                    url + "/stream/expired",
                    content=batch(1, sequence, 30),
                    headers={"Content-Type": ARROW_STREAM},
                )
                assert answer.status_code == 200, answer.text
            time.sleep(2)  # every snapshot is older than a second now
            deadline = time.monotonic() + 60
            ok = failed = 0.0
            while time.monotonic() < deadline and ok < 3:
                time.sleep(1)
                text = http.get(url + "/metrics").text
                ok = metric(text, "arrowport_lake_maintenance_runs_ok_total")
                failed = metric(text, "arrowport_lake_maintenance_runs_failed_total")
        account = "\n".join(line for line in cluster.nodes[0].lines if "lake maint" in line)
        assert ok >= 3, account
        assert failed == 0, account
        assert sum(count_by_batch(url, "expired").values()) == 300
    finally:
        cluster.stop()


def test_lakes_sharing_a_catalog_database_take_turns_each_on_their_own() -> None:
    # Two lakes in one PostgreSQL database: one lake's maintenance must never keep the other's
    # from running, while two nodes of one lake still take turns.
    location = CatalogLocation.parse("postgres:" + services()["ARROWPORT_TEST_PG_DSN"])
    first, second = new_lake_name("turns"), new_lake_name("turns")
    with catalog_lock(location, 7, first, wait=False) as mine:
        assert mine
        with catalog_lock(location, 7, first, wait=False) as again:
            assert not again
        with catalog_lock(location, 7, second, wait=False) as other:
            assert other
        with catalog_lock(location, 8, first, wait=False) as another_kind:
            assert another_kind
    with catalog_lock(location, 7, first, wait=False) as released:
        assert released


def metric(exposition: str, name: str) -> float:
    """The value of the unlabelled series ``name`` in a /metrics text (NaN when absent, which
    no comparison accepts)."""
    for line in exposition.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return float("nan")


def test_workers_share_one_port_on_a_lake_and_are_refused_on_a_file(tmp_path: Path) -> None:
    node = ArrowportProcess(tmp_path / "workers", config=lake_config(), args=["--workers", "3"])
    node.start(timeout=90)
    try:
        with httpx.Client(base_url=node.url, timeout=60) as http:
            for i in range(12):
                answer = http.post(
                    "/stream/shared",
                    content=batch(2, i, 10),
                    headers={"Content-Type": ARROW_STREAM, "Connection": "close"},
                )
                assert answer.status_code == 200, answer.text
        assert sum(count_by_batch(node.url, "shared").values()) == 120
        started = {line for line in node.lines if "Started server process" in line}
        assert len(started) == 3, started
        assert node.stop(60) == 0
    finally:
        node.kill()
    file_node = ArrowportProcess(tmp_path / "file", args=["--workers", "2"])
    with pytest.raises(RuntimeError, match="exited during start-up"):
        file_node.start()
    assert any("--workers needs storage.target: ducklake" in line for line in file_node.lines)


def lake_command(config: dict[str, Any], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "maintain.yaml"
    path.write_text(yaml.safe_dump(config))
    return subprocess.run(
        [sys.executable, "-m", "arrowport", "lake", "maintain", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_lake_maintain_merges_files_beside_a_running_node_and_keeps_every_row(
    tmp_path: Path,
) -> None:
    config = lake_config(data_inlining_row_limit=0, delete_files_after="0 seconds")
    node = ArrowportProcess(tmp_path / "node", config=config).start(timeout=60)
    try:
        with httpx.Client(base_url=node.url, timeout=60) as http:
            for sequence in range(12):
                answer = http.post(
                    "/stream/by_hand",
                    content=batch(3, sequence, 50),
                    headers={"Content-Type": ARROW_STREAM},
                )
                assert answer.status_code == 200, answer.text
        done = lake_command(config, tmp_path)
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert report["files_before"] >= 12
        assert report["files_after"] < report["files_before"]
        assert set(report["seconds"]) >= {"merge_adjacent_files", "expire_snapshots"}
        assert count_by_batch(node.url, "by_hand") == {(3, s): 50 for s in range(12)}
    finally:
        node.stop(60)


def test_lake_maintain_refuses_a_file_target(tmp_path: Path) -> None:
    done = lake_command({"duckdb": {"path": str(tmp_path / "x.duckdb")}}, tmp_path)
    assert done.returncode == 2
    assert "needs storage.target: ducklake" in done.stderr
