"""The report a run prints when it is done: each table under a title that says what was sent
and what the figure is divided by, each followed by the machine's core count and load average
(at the start and now, since every process shares the machine), the scaling tables only when a
lake target finished, and last one line per target that failed and is missing from the tables."""

from __future__ import annotations

import os
from typing import Any

from benchmarks.lake.limits import limit_figures
from benchmarks.lake.plan import Plan
from benchmarks.lake.projection import expected_curve, scaling_inputs
from benchmarks.lake.results import lake_results
from benchmarks.lake.tables import (
    bulk_table,
    cpu_table,
    curve_table,
    limits_table,
    scaling_table,
    small_table,
)
from benchmarks.report import rows_label


def machine_line(meta: dict[str, Any]) -> str:
    load = os.getloadavg()
    return (
        f"(machine: os.cpu_count()={meta['cpu_count']}, usable cores={meta['affinity']}, "
        f"load average {meta['load_average'][0]:.2f} at start, {load[0]:.2f} now)"
    )


def print_report(meta: dict[str, Any], limits: dict[str, Any], results: dict[str, Any]) -> None:
    figures = limit_figures(limits)
    plan = Plan(**meta["plan"])
    machine = machine_line(meta)
    sections = [
        ("In-process limits (DuckDB in this process)", limits_table(limits)),
        (
            f"Bulk: {plan.bulk_per_node} x {rows_label(plan.bulk_rows)}-row HTTP binary requests per "
            "node, all at once (median round); x limit = ÷ the in-process one-transaction "
            "insert of the same target",
            bulk_table(results, figures),
        ),
        (
            f"Small: {plan.clients} clients x {plan.requests_per_client} requests of "
            f"{rows_label(plan.small_rows)} rows, client i on node i mod N; x seq limit = ÷ the "
            "in-process sequential insert+commit rate of the same target",
            small_table(results, figures),
        ),
        (
            "CPU while measuring, in cores busy (CPU seconds ÷ wall seconds); postgres and s3 "
            "are the whole test services, other users included",
            cpu_table(results, limits),
        ),
    ]
    if lake_results(results):
        inputs = scaling_inputs(limits, results)
        sections += [
            ("What limits scaling (measured)", scaling_table(inputs)),
            (
                "Expected aggregate for N nodes on machines of their own: one node's measured "
                "rate x N, capped by the lake's commit ceiling x rows per commit and by one core "
                "each of PostgreSQL and the S3 server; 'measured here' = all nodes on this "
                "machine",
                curve_table(expected_curve(inputs), results),
            ),
        ]
    print()
    for title, text in sections:
        print(f"{title}\n{machine}\n{text}\n")
    failed = {"DuckDB file": results.get("file", {})} | {
        f"DuckLake, {n} node(s)": target for n, target in results["lake"].items()
    }
    for label, target in failed.items():
        if "error" in target:
            print(f"{label}: failed, not in the tables: {target['error']}")
