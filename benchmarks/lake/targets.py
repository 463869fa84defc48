"""The targets the workloads run against, each set up fresh and torn down after: one node on a
DuckDB file, and N nodes sharing one new lake (started one after another, the first creating
the lake; the lake removed afterwards, also on a failure). Each target runs both workloads on
tables of its own and counts the rows that landed; a failing node's log tail is printed."""

from __future__ import annotations

import contextlib
import dataclasses
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tests.lake import lake_config, new_lake_name
from tests.server import ArrowportProcess

from benchmarks.lake.meter import Meter
from benchmarks.lake.plan import Plan
from benchmarks.lake.services import Services, service_pids
from benchmarks.lake.teardown import remove_lake
from benchmarks.lake.workloads import Payloads, bulk_workload, small_workload
from benchmarks.servers import row_stats


@contextlib.contextmanager
def running(nodes: list[ArrowportProcess]) -> Iterator[list[ArrowportProcess]]:
    """Start the nodes one after another (the first creates a new lake), stop them all after;
    on a failure, print the end of each node's log."""
    try:
        for node in nodes:
            node.start(timeout=120)
        yield nodes
    except BaseException:
        for i, node in enumerate(nodes):
            tail = [line for line in node.lines if '"request"' not in line][-10:]
            print(f"\n  log of node{i} (last lines):\n    " + "\n    ".join(tail))
        raise
    finally:
        for node in nodes:
            if node.alive():
                try:
                    node.stop(timeout=120)
                except subprocess.TimeoutExpired:
                    node.kill()


@dataclasses.dataclass(frozen=True)
class Bench:
    """What every target is measured with."""

    plan: Plan
    payloads: Payloads
    services: Services
    root: Path  # the nodes' working directories
    node_settings: dict[str, Any]  # merged into every node's configuration


def measure_target(
    nodes: list[ArrowportProcess],
    bench: Bench,
    lake: str | None,
    fewer_clients: Sequence[int] = (),
) -> dict[str, Any]:
    """Both workloads against these nodes, each on its own table, checked for landed rows;
    then the small workload again with each of ``fewer_clients`` clients (the share of the
    clients one node gets when there are more nodes)."""
    plan, payloads = bench.plan, bench.payloads
    with running(nodes):
        urls = [node.url for node in nodes]
        pids = {f"node{i}": node.proc.pid if node.proc else None for i, node in enumerate(nodes)}

        def meter() -> Meter:
            return Meter(pids | service_pids(bench.services), bench.services, lake)

        result = {
            "bulk": bulk_workload(urls, plan, payloads.bulk, payloads.warm, meter),
            "small": small_workload(urls, plan, payloads.small, meter),
        }
        for clients in fewer_clients:
            name = f"small_{clients}_clients"
            result[name] = small_workload(urls, plan, payloads.small[:clients], meter, name)
        for name, workload in result.items():
            landed = row_stats(nodes[0], name)["rows"]
            workload["landed_rows"] = landed
            workload["landed"] = landed == workload["expected_rows"]
        return result


def file_target(bench: Bench) -> dict[str, Any]:
    print("- DuckDB file, 1 node ...", flush=True)
    node = ArrowportProcess(bench.root / "file-node", config=bench.node_settings or None)
    return measure_target([node], bench, lake=None)


def lake_target(count: int, bench: Bench, fewer_clients: Sequence[int] = ()) -> dict[str, Any]:
    """``count`` nodes on one fresh lake; the lake is removed afterwards."""
    print(f"- DuckLake, {count} node(s) ...", flush=True)
    config = lake_config(new_lake_name(f"bench_{count}n")) | bench.node_settings
    nodes = [
        ArrowportProcess(bench.root / f"lake{count}-node{i}", config=config) for i in range(count)
    ]
    try:
        schema = config["ducklake"]["metadata_schema"]
        return measure_target(nodes, bench, schema, fewer_clients)
    finally:
        remove_lake(config["ducklake"], bench.services)
