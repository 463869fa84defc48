"""One run of the lake benchmark: the command line's options, the data and request bodies made
before anything is timed, the in-process limits, then the DuckDB-file target and a fresh lake per
node count (a target that fails is recorded and the others still run), the printed report, and
everything measured — every request's latency included — written to a results JSON file."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import shutil
import sys
import tempfile
import traceback
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from benchmarks import data
from benchmarks.lake.limits import in_process_limits
from benchmarks.lake.plan import FULL, QUICK, Plan
from benchmarks.lake.report import print_report
from benchmarks.lake.services import Services, services
from benchmarks.lake.targets import Bench, file_target, lake_target
from benchmarks.lake.workloads import make_payloads

RESULTS_DIR = Path(__file__).parent.parent / "results"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.lake",
        description="Aggregate ingest of N Arrowport nodes sharing one DuckLake.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="100k-row bulk requests, 16x20 small requests"
    )
    parser.add_argument(
        "--nodes",
        type=_node_counts,
        default=[1, 2, 3],
        help="node counts to measure, comma-separated (default 1,2,3)",
    )
    parser.add_argument("--no-file", action="store_true", help="skip the DuckDB-file target")
    parser.add_argument(
        "--memory-limit",
        help="every node's duckdb.memory_limit (e.g. 1GB; default: the server's own default)",
    )
    parser.add_argument(
        "--output", type=Path, help="results JSON (default benchmarks/results/lake-<time>.json)"
    )
    return parser


def _meta(plan: Plan, services: Services, args: argparse.Namespace) -> dict[str, Any]:
    return {
        "memory_limit": args.memory_limit,
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python", "-m", "benchmarks.lake", *sys.argv[1:]]),
        "cpu_count": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)),
        "load_average": os.getloadavg(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "duckdb": duckdb.__version__,
        "pyarrow": pa.__version__,
        "plan": dataclasses.asdict(plan),
        "watched": {"postgres_pid": services.postgres_pid, "s3_pid": services.s3_pid},
    }


def _attempt(measure: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """A target's figures, or the error that stopped it (the other targets still run)."""
    try:
        return measure()
    except Exception as exc:
        traceback.print_exc()
        return {"error": f"{type(exc).__name__}: {exc}"[:500]}


def _node_counts(text: str) -> list[int]:
    try:
        counts = [int(n) for n in text.split(",") if n.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"expected node counts like 1,2,3, not {text!r}")
    return counts


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    found = services()
    plan = QUICK if args.quick else FULL
    counts: list[int] = args.nodes
    meta = _meta(plan, found, args)
    print(
        f"Arrowport lake benchmark — os.cpu_count()={meta['cpu_count']}, usable cores "
        f"{meta['affinity']}, load average {meta['load_average'][0]:.2f}, nodes {counts}"
    )
    print("generating data ...", flush=True)
    bulk = data.make_table(plan.bulk_rows)
    small_rows = plan.clients * plan.requests_per_client * plan.small_rows
    small = data.make_table(small_rows, start_id=1_000_000_000, seed=11)
    payloads = make_payloads(plan, bulk, small)
    sequential = [
        small.slice(i * plan.small_rows, plan.small_rows) for i in range(plan.sequential_inserts)
    ]

    root = Path(tempfile.mkdtemp(prefix="arrowport-lake-bench-"))
    settings = {"duckdb": {"memory_limit": args.memory_limit}} if args.memory_limit else {}
    bench = Bench(plan, payloads, found, root, settings)
    # One node also takes the share of the clients one node gets when there are more nodes:
    # its group commits shrink with it, whatever the number of nodes.
    shares = sorted({-(-plan.clients // n) for n in counts if n > 1}, reverse=True)
    results: dict[str, Any] = {"lake": {}}
    try:
        limits = in_process_limits(plan, bulk, sequential, found, root)
        if not args.no_file:
            results["file"] = _attempt(partial(file_target, bench))
        for count in counts:
            fewer = shares if count == 1 else []
            results["lake"][str(count)] = _attempt(partial(lake_target, count, bench, fewer))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    meta["load_average_end"] = os.getloadavg()
    print_report(meta, limits, results)
    out = args.output or RESULTS_DIR / f"lake-{dt.datetime.now():%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "limits": limits, "results": results}, indent=2))
    print(f"results written to {out}")
    return 0
