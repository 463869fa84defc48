"""The plain-text tables of a run, every figure beside what it is read against: the in-process
limits; the bulk and small workloads per target (÷ the in-process limit of the same target, ÷
the one-node lake); the CPU each workload cost, in cores busy, per process and for the whole
machine; what limits scaling; and the expected curve for N nodes beside what was measured here.
Formatting only: the figures come from :mod:`.limits`, :mod:`.results` and :mod:`.projection`."""

from __future__ import annotations

from typing import Any

from benchmarks.lake.limits import limit_figures
from benchmarks.lake.results import lake_results, measured
from benchmarks.monitor import median
from benchmarks.report import number, rows_label, text_table


def _cores(cpu_s: float, wall_s: float) -> str:
    return number(cpu_s / wall_s, 2)


def limits_table(limits: dict[str, Any]) -> str:
    figures = limit_figures(limits)
    lake_bulk, lake_seq = limits["lake_bulk"], limits["lake_sequential"]
    commits = limits["catalog_commits"]
    bulk_rows = rows_label(lake_bulk["rows"])
    seq_rows = rows_label(lake_seq["batch_rows"])
    catalog = commits["catalog"]
    n = commits["commits"]
    rows = [
        [
            f"DuckDB file, {bulk_rows} rows, one transaction",
            number(median(limits["file_bulk"]["times_s"]) * 1000, 1),
            number(figures["file_bulk"]),
            "",
        ],
        [
            f"DuckLake, {bulk_rows} rows, one transaction",
            number(median(lake_bulk["times_s"]) * 1000, 1),
            number(figures["lake_bulk"]),
            f"{number(figures['lake_bulk'] / figures['file_bulk'], 2)} x file",
        ],
        [
            "  of which INSERT (Parquet to the store)",
            number(median(lake_bulk["insert_s"]) * 1000, 1),
            "",
            f"{number(median(lake_bulk['insert_s']) / median(lake_bulk['times_s']) * 100)}%",
        ],
        [
            "  of which COMMIT (the catalog)",
            number(median(lake_bulk["commit_s"]) * 1000, 1),
            "",
            f"{number(median(lake_bulk['commit_s']) / median(lake_bulk['times_s']) * 100)}%",
        ],
        [
            f"  Parquet encoding alone (local file, {lake_bulk['parquet_bytes'] / 1e6:.0f} MB)",
            number(median(lake_bulk["local_parquet_s"]) * 1000, 1),
            number(lake_bulk["rows"] / median(lake_bulk["local_parquet_s"])),
            "",
        ],
        [
            f"DuckDB file, {seq_rows}-row insert+commit, sequential",
            number(median(limits["file_sequential"]["times_s"]) * 1000, 2),
            number(figures["file_sequential"]),
            "",
        ],
        [
            f"DuckLake, {seq_rows}-row insert+commit, sequential",
            number(median(lake_seq["times_s"]) * 1000, 2),
            number(figures["lake_sequential"]),
            f"insert {number(median(lake_seq['insert_s']) * 1000, 1)} ms + commit "
            f"{number(median(lake_seq['commit_s']) * 1000, 1)} ms",
        ],
        [
            "DuckLake catalog-only commit (1 inlined row)",
            number(median(commits["times_s"]) * 1000, 2),
            f"{number(figures['catalog_commits_per_s'])} commits/s",
            f"per commit: {catalog['xact_commit'] / n:.1f} PG xacts (whole db), "
            f"{catalog['catalog_scans'] / n:.1f} scans, "
            f"{catalog['catalog_row_writes'] / n:.1f} row writes"
            + ("" if commits["inlined"] else " (NOT inlined)"),
        ],
    ]
    return text_table(["in-process limit", "p50 ms", "rows/s", "note"], rows)


def _versus(value: float, reference: float | None) -> str:
    return number(value / reference, 2) if reference else ""


def bulk_table(results: dict[str, Any], figures: dict[str, float]) -> str:
    one_node = results["lake"].get("1", {}).get("bulk", {}).get("rows_per_s")
    rows = []
    for m in measured(results, "bulk"):
        w = m.figures
        rows.append(
            [
                m.label,
                str(m.nodes),
                f"{w['requests']}x{rows_label(w['rows'] // w['requests'])}",
                number(w["seconds"], 2),
                number(w["rows_per_s"]),
                _versus(w["rows_per_s"], figures["lake_bulk" if m.lake else "file_bulk"]),
                _versus(w["rows_per_s"], one_node if m.lake else None),
                number(w["latency"]["p50_ms"]),
                number(w["latency"]["p99_ms"]),
                str(w["retries"]),
                str(w["usage"].get("lake_commits", "")),
                "yes" if w["landed"] else "NO",
            ]
        )
    headers = ["target", "nodes", "requests", "s", "rows/s", "x limit", "x 1 node"]
    headers += ["p50 ms", "p99 ms", "503s", "commits", "landed"]
    return text_table(headers, rows)


def small_table(results: dict[str, Any], figures: dict[str, float]) -> str:
    one_node = results["lake"].get("1", {}).get("small", {}).get("rows_per_s")
    rows = []
    for m in measured(results, "small"):
        w = m.figures
        commits = w["usage"].get("lake_commits")
        rows.append(
            [
                m.label,
                str(m.nodes),
                number(w["seconds"], 2),
                number(w["rows_per_s"]),
                _versus(
                    w["rows_per_s"], figures["lake_sequential" if m.lake else "file_sequential"]
                ),
                _versus(w["rows_per_s"], one_node if m.label == "DuckLake" else None),
                number(w["latency"]["p50_ms"], 1),
                number(w["latency"]["p99_ms"], 1),
                str(w["retries"]),
                str(commits) if commits else "",
                number(w["rows"] / commits) if commits else "",
                number(commits / w["seconds"], 1) if commits else "",
                "yes" if w["landed"] else "NO",
            ]
        )
    headers = ["target", "nodes", "s", "rows/s", "x seq limit", "x 1 node", "p50 ms", "p99 ms"]
    headers += ["503s", "commits", "rows/commit", "commits/s", "landed"]
    return text_table(headers, rows)


def cpu_table(results: dict[str, Any], limits: dict[str, Any]) -> str:
    rows = [_cpu_row("in-process lake limit", "-", limits["lake_bulk"]["usage"], 0, 0)]
    for workload in ("bulk", "small"):
        for m in measured(results, workload):
            label = f"{workload}, {m.label}"
            rows.append(
                _cpu_row(label, str(m.nodes), m.figures["usage"], m.nodes, m.figures["rows"])
            )
    headers = ["workload", "nodes", "wall s", "each node", "all nodes", "postgres", "s3"]
    headers += ["this process", "all these", "whole machine", "node CPU-s/1M rows"]
    headers += ["node CPU-ms/commit"]
    return text_table(headers, rows)


def _cpu_row(label: str, count: str, usage: dict[str, Any], nodes: int, rows: int) -> list[str]:
    cpu, wall = usage["cpu_s"], usage["wall_s"]
    node_cpu = [cpu[f"node{i}"] for i in range(nodes) if f"node{i}" in cpu]
    commits = usage.get("lake_commits")
    return [
        label,
        count,
        number(wall, 2),
        " ".join(_cores(c, wall) for c in node_cpu) or "-",
        _cores(sum(node_cpu), wall) if node_cpu else "-",
        _cores(cpu["postgres"], wall) if "postgres" in cpu else "n/a",
        _cores(cpu["s3"], wall) if "s3" in cpu else "n/a",
        _cores(cpu["load generator"], wall),
        _cores(sum(cpu.values()), wall),
        _cores(usage["machine_cpu_s"], wall),
        number(sum(node_cpu) / rows * 1e6, 2) if node_cpu and rows else "-",
        number(sum(node_cpu) / commits * 1e3, 1) if node_cpu and commits else "-",
    ]


def scaling_table(inputs: dict[str, Any]) -> str:
    n = inputs["from_nodes"]
    node = "one node" if n == 1 else f"a node (of {n})"
    pg = inputs["postgres_cpu_ms_per_commit"]
    rows = []
    for workload in ("bulk", "small"):
        figures = inputs[workload]
        cost = figures["cpu_s_per_1m_rows"]
        rows += [
            [f"{workload}: {node}, rows/s", number(figures["node_rows_per_s"])],
            [f"{workload}: rows per lake commit", number(figures["rows_per_commit"])],
            [f"{workload}: lake commits/s per node", number(figures["node_commits_per_s"], 1)],
            [
                f"{workload}: node CPU-ms per lake commit",
                number(figures["node_cpu_ms_per_commit"], 1),
            ],
            [
                f"{workload}: nodes at that rate to reach the commit ceiling",
                number(figures["nodes_to_commit_ceiling"], 1),
            ],
        ]
        rows += [
            [
                f"{workload}: {name} CPU-s per 1M rows",
                "n/a" if cost[name] is None else number(cost[name], 3),
            ]
            for name in ("nodes", "postgres", "s3")
        ]
    rows += [
        [
            "lake commits/s, catalog only, one at a time",
            number(inputs["lake_commits_per_s_ceiling"]),
        ],
        ["PostgreSQL CPU-ms per catalog-only commit", number(pg, 2) if pg is not None else "n/a"],
        [
            "share of the in-process lake INSERT waiting on the store",
            f"{number(inputs['store_share_of_lake_insert'] * 100)}%",
        ],
    ]
    return text_table(["measured", "value"], rows)


def curve_table(curve: list[dict[str, Any]], results: dict[str, Any]) -> str:
    rows = []
    for point in curve:
        here = dict(lake_results(results)).get(point["nodes"])
        rows.append(
            [
                str(point["nodes"]),
                number(point["bulk"]["rows_per_s"]),
                point["bulk"]["bound_by"],
                number(here["bulk"]["rows_per_s"]) if here else "",
                number(point["small"]["rows_per_s"]),
                point["small"]["bound_by"],
                number(here["small"]["rows_per_s"]) if here else "",
            ]
        )
    headers = ["nodes", "bulk rows/s", "bound by", "measured here", "small rows/s", "bound by"]
    return text_table([*headers, "measured here"], rows)
