"""What limits scaling, and the aggregate it implies for N nodes on machines of their own. From
the fewest nodes measured it takes a node's rate and CPU cost per row, the services' CPU cost per
row, rows per lake commit and the lake's catalog-only commit ceiling; the expected curve is N
times one node's rate, capped by that commit ceiling x rows per commit and by what one core of
PostgreSQL and one of the S3 server can serve at their measured cost."""

from __future__ import annotations

from typing import Any

from benchmarks.lake.results import lake_results
from benchmarks.monitor import median

PROJECTED_NODES = (1, 2, 3, 4, 8, 16, 32)


def _per_1m(usage: dict[str, Any], name: str, rows: int) -> float | None:
    cpu = usage["cpu_s"]
    if name == "nodes":
        spent = float(sum(v for k, v in cpu.items() if k.startswith("node")))
        return spent / rows * 1e6
    return float(cpu[name]) / rows * 1e6 if name in cpu else None


def scaling_inputs(limits: dict[str, Any], results: dict[str, Any]) -> dict[str, Any]:
    """The measured figures the expected curve rests on, from the fewest nodes measured: a
    node's rate and CPU cost, the services' CPU cost, the lake's commit ceiling, rows per
    commit."""
    count, fewest = lake_results(results)[0]
    commits = limits["catalog_commits"]
    pg_per_commit = _per_1m(commits["usage"], "postgres", commits["commits"])
    inputs: dict[str, Any] = {
        "from_nodes": count,
        "lake_commits_per_s_ceiling": 1 / median(commits["times_s"]),
        "postgres_cpu_ms_per_commit": None if pg_per_commit is None else pg_per_commit / 1e3,
        "store_share_of_lake_insert": 1
        - median(limits["lake_bulk"]["local_parquet_s"]) / median(limits["lake_bulk"]["insert_s"]),
    }
    for workload in ("bulk", "small"):
        figures = fewest[workload]
        usage, rows = figures["usage"], figures["rows"]
        lake_commits = max(usage["lake_commits"], 1)
        node_cpu = _per_1m(usage, "nodes", rows) or 0.0
        node_commits_per_s = lake_commits / usage["wall_s"] / count
        inputs[workload] = {
            "node_rows_per_s": figures["rows_per_s"] / count,
            "cpu_s_per_1m_rows": {
                name: _per_1m(usage, name, rows) for name in ("nodes", "postgres", "s3")
            },
            "rows_per_commit": rows / lake_commits,
            "node_commits_per_s": node_commits_per_s,
            "node_cpu_ms_per_commit": node_cpu * rows / 1e6 / lake_commits * 1e3,
            "nodes_to_commit_ceiling": inputs["lake_commits_per_s_ceiling"] / node_commits_per_s,
        }
    return inputs


def expected_curve(inputs: dict[str, Any]) -> list[dict[str, Any]]:
    """Aggregate rows/s for N nodes, each on a machine of its own with its own clients: N times
    one node's measured rate, capped by the lake-wide commit ceiling (DuckLake numbers snapshots
    one after another, so overlapping commits serialise: ceiling x rows per commit) and by what
    one core of PostgreSQL and one of the S3 server can serve at their measured cost."""
    curve = []
    for n in PROJECTED_NODES:
        point: dict[str, Any] = {"nodes": n}
        for workload in ("bulk", "small"):
            figures = inputs[workload]
            candidates = {
                "nodes": n * figures["node_rows_per_s"],
                "commits": inputs["lake_commits_per_s_ceiling"] * figures["rows_per_commit"],
            }
            for service in ("postgres", "s3"):
                cost = figures["cpu_s_per_1m_rows"][service]
                if cost:
                    candidates[f"{service} core"] = 1e6 / cost
            bound = min(candidates, key=lambda k: candidates[k])
            point[workload] = {"rows_per_s": candidates[bound], "bound_by": bound}
        curve.append(point)
    return curve
