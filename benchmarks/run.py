"""Measure Arrowport against DuckDB's own in-process insert: ``python -m benchmarks.run``.

Every case starts a fresh ``arrowport serve`` process on a fresh file-backed database, and every
throughput is printed as a ratio to DuckDB inserting the same Arrow data in this process, in the
same run. See benchmarks/README.md for what each case means.

Example::

    python -m benchmarks.run --quick
    python -m benchmarks.run --only http-binary,inprocess --profile profiles/
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import fnmatch
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from benchmarks import cases, data, report
from benchmarks.servers import Profiler, Servers, flight_flag_supported

CASES = (
    "inprocess",
    "http-json",
    "http-binary",
    "http-binary-10k",
    "http-zstd",
    "flight",
    "flight-10k",
    "flight-bare",
    "adbc-ingest",
    "quack",
    "concurrent-http",
    "concurrent-flight",
    "health",
    "rss-http",
    "rss-flight",
    "rss-json",
)
# Cases judged against the in-process sequential small-insert rate: selecting one runs it too.
# (The per-size cases measure their own in-process limit, interleaved with their requests.)
_NEEDS_LIMIT = {"http-binary", "concurrent-http", "concurrent-flight"}
# Cases that need Arrowport's Flight port.
_FLIGHT = {"flight", "flight-10k", "adbc-ingest", "concurrent-flight", "rss-flight"}
RESULTS_DIR = Path(__file__).parent / "results"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description="Benchmark Arrowport's ingest paths against DuckDB's in-process insert.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small sizes (1k, 100k), few repeats, 16x20 batches, no 2 GB cases (< 1 minute)",
    )
    parser.add_argument(
        "--only",
        action="append",
        metavar="CASE",
        help=f"run only these cases (comma-separated, globs allowed; repeatable): {', '.join(CASES)}",
    )
    parser.add_argument(
        "--sizes", help="comma-separated row counts for the per-size cases (e.g. 1000,1000000)"
    )
    parser.add_argument("--repeats", type=int, help="timed repeats per size (median reported)")
    parser.add_argument(
        "--big-gb", type=float, help="size of the memory cases' stream in GiB (default 2)"
    )
    parser.add_argument(
        "--json-mb", type=float, help="size of rss-json's JSON body in MB (default 500)"
    )
    parser.add_argument(
        "--output",
        type=Path,
        help="results JSON path (default benchmarks/results/<timestamp>.json)",
    )
    parser.add_argument("--workdir", type=Path, help="where servers keep their databases")
    parser.add_argument("--keep", action="store_true", help="keep the servers' databases")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="attach py-spy to each server; write DIR/<case>.svg (or .txt/.json)",
    )
    parser.add_argument(
        "--profile-format",
        choices=["flamegraph", "raw", "speedscope"],
        default="flamegraph",
        help="py-spy output format (raw = collapsed stacks, greppable)",
    )
    parser.add_argument("--native", action="store_true", help="py-spy --native (C/C++ frames)")
    return parser


def _selected(only: list[str] | None) -> list[str]:
    if not only:
        return list(CASES)
    patterns = [p.strip() for item in only for p in item.split(",") if p.strip()]
    unknown = [p for p in patterns if not fnmatch.filter(CASES, p)]
    if unknown:
        raise SystemExit(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(CASES)}")
    return [c for c in CASES if any(fnmatch.fnmatch(c, p) for p in patterns)]


def _plan(args: argparse.Namespace) -> cases.Plan:
    plan = cases.QUICK if args.quick else cases.FULL
    if args.sizes:
        sizes = tuple(int(s.replace("_", "")) for s in args.sizes.split(","))
        repeats = {s: plan.repeats.get(s, 3 if s > 100_000 else 10) for s in sizes}
        plan = dataclasses.replace(plan, sizes=sizes, repeats=repeats)
    if args.repeats:
        plan = dataclasses.replace(plan, repeats={s: args.repeats for s in plan.sizes})
    if args.big_gb:
        plan = dataclasses.replace(plan, big_bytes=int(args.big_gb * 1024**3))
    if args.json_mb:
        plan = dataclasses.replace(plan, big_json_bytes=int(args.json_mb * 10**6))
    return plan


def _git_commit() -> str:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
            cwd=Path(__file__).parent,
        )
        return done.stdout.strip()
    except OSError:
        return ""


def _meta(args: argparse.Namespace, plan: cases.Plan, flight: bool) -> dict[str, Any]:
    return {
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join(
            [os.path.basename(sys.executable), "-m", "benchmarks.run", *sys.argv[1:]]
        ),
        "commit": _git_commit(),
        "cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "load_average": os.getloadavg(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "duckdb": duckdb.__version__,
        "pyarrow": pa.__version__,
        "flight_flag": flight,
        "plan": dataclasses.asdict(plan),
    }


def _run_case(name: str, results: dict[str, Any], work: Callable[[], dict[str, Any]]) -> None:
    print(f"- {name} ...", end=" ", flush=True)
    started = time.perf_counter()
    try:
        results[name] = work()
    except cases.NotAvailable as exc:
        results[name] = {"unavailable": str(exc)}
    except Exception as exc:
        traceback.print_exc()
        results[name] = {"error": f"{type(exc).__name__}: {exc}"}
    status = report.case_status(results[name]) or "done"
    print(f"{status} ({time.perf_counter() - started:.1f} s)", flush=True)


def _cases(
    plan: cases.Plan,
    tables: dict[int, pa.Table],
    servers: Servers,
    results: dict[str, Any],
) -> dict[str, Callable[[], dict[str, Any]]]:
    """Each case's measurement, to be called in ``CASES`` order (the concurrent ones read the
    in-process sequential limit from ``results`` when they run)."""

    def seq() -> dict[str, Any] | None:
        limit = results.get("inprocess")
        return limit["sequential"] if limit and report.case_status(limit) is None else None

    def sizes(kind: str) -> Callable[[], dict[str, Any]]:
        return lambda: cases.http_sizes(kind, servers, plan, tables)

    def flight(kind: str) -> Callable[[], dict[str, Any]]:
        return lambda: cases.flight_sizes(servers, plan, tables, kind)

    return {
        "inprocess": lambda: cases.in_process(plan, tables, servers.root / "inprocess"),
        "http-json": sizes("http-json"),
        "http-binary": sizes("http-binary"),
        "http-binary-10k": sizes("http-binary-10k"),
        "http-zstd": sizes("http-zstd"),
        "flight": flight("flight"),
        "flight-10k": flight("flight-10k"),
        "flight-bare": lambda: cases.bare_flight_sizes(servers, plan, tables),
        "adbc-ingest": lambda: cases.adbc_sizes(servers, plan, tables),
        "quack": lambda: cases.quack_case(servers, plan, tables, seq()),
        "concurrent-http": lambda: cases.concurrent_http(servers, plan, seq()),
        "concurrent-flight": lambda: cases.concurrent_flight(servers, plan, seq()),
        "health": lambda: cases.health_during_ingest(servers, plan, tables[plan.health_rows]),
        "rss-http": lambda: cases.big_http(servers, plan),
        "rss-flight": lambda: cases.big_flight(servers, plan),
        "rss-json": lambda: cases.big_json(servers, plan),
    }


def _runnable(selected: list[str], plan: cases.Plan) -> list[str]:
    """``selected`` without the memory cases the plan leaves out, with the limit they need."""
    skipped = set()
    if plan.big_bytes is None:
        skipped |= {"rss-http", "rss-flight"}
    if plan.big_json_bytes is None:
        skipped.add("rss-json")
    selected = [c for c in selected if c not in skipped]
    if _NEEDS_LIMIT & set(selected) and "inprocess" not in selected:
        selected.insert(0, "inprocess")
    return selected


def _print_header(meta: dict[str, Any], selected: list[str], flight: bool) -> None:
    print(
        f"Arrowport benchmark — {report.cores(meta)}, DuckDB {meta['duckdb']}, "
        f"pyarrow {meta['pyarrow']}, commit {meta['commit'] or '?'}, "
        f"load average {meta['load_average'][0]:.2f}"
    )
    if meta["load_average"][0] > 0.5 * (meta["usable_cpus"] or 1):
        print("note: the machine is busy; other work on these cores skews every figure")
    print(f"cases: {', '.join(selected)}" + ("" if flight else "  (flight: not available)"))


def _print_tables(meta: dict[str, Any], results: dict[str, Any], verdicts: list[Any]) -> None:
    sections = [
        (
            "Throughput, one client, one request at a time (median of repeats)",
            report.throughput_table(results),
        ),
        ("Concurrent small batches", report.concurrent_table(results)),
        ("Arrowport against DuckDB's Quack protocol, same run", report.quack_table(results)),
        ("/health latency during large ingests", report.health_table(results)),
        ("Peak server memory while a large body lands", report.memory_table(results)),
        ("Figures the product must reach", report.targets_table(verdicts)),
    ]
    print()
    for title, text in sections:
        if text:
            print(f"{title} [{report.cores(meta)}]\n{text}\n")
    end = meta["load_average_end"]
    print(f"load average at the end: {end[0]:.2f} {end[1]:.2f} {end[2]:.2f}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    plan = _plan(args)
    selected = _runnable(_selected(args.only), plan)

    flight = flight_flag_supported()
    meta = _meta(args, plan, flight)
    _print_header(meta, selected, flight)
    print("generating data ...", flush=True)
    tables = {size: data.make_table(size) for size in plan.sizes}
    if "health" in selected and plan.health_rows not in tables:
        tables[plan.health_rows] = data.make_table(plan.health_rows)

    root = Path(args.workdir or tempfile.mkdtemp(prefix="arrowport-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    profiler = Profiler(args.profile, args.profile_format, args.native) if args.profile else None
    servers = Servers(root, flight, profiler, args.keep)
    results: dict[str, Any] = {}
    work = _cases(plan, tables, servers, results)
    for name in selected:
        if name in _FLIGHT and not flight:
            results[name] = {"unavailable": "flight: not available"}
            print(f"- {name} ... flight: not available")
            continue
        _run_case(name, results, work[name])

    if not args.keep and args.workdir is None:
        import shutil

        shutil.rmtree(root, ignore_errors=True)

    meta["load_average_end"] = os.getloadavg()
    verdicts = report.targets(results)
    _print_tables(meta, results, verdicts)
    out = args.output or RESULTS_DIR / f"{dt.datetime.now():%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "results": results, "targets": verdicts}, indent=2))
    print(f"results written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
