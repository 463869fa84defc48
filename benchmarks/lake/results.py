"""Reading a run's results for the tables and the projection: the lake targets that ran to the
end, by node count, and one workload's figures on every target in the order the tables list
them (the file target, then the lake by node count, the one-node lake's runs with fewer clients
right after it). Targets that failed carry an ``error`` and are left out here."""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class Measured:
    """One workload on one target, as a table row sees it."""

    label: str
    nodes: int
    lake: bool
    figures: dict[str, Any]


def lake_results(results: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    """``(nodes, figures)`` of every lake target that ran to the end, fewest nodes first."""
    done = [(int(n), target) for n, target in results["lake"].items() if "error" not in target]
    return sorted(done, key=lambda item: item[0])


def measured(results: dict[str, Any], workload: str) -> list[Measured]:
    """The file target, then the lake for each node count (and, for ``small``, one node with
    fewer clients right after the one-node row); targets that failed are left out."""
    found = []
    if "error" not in results.get("file", {"error": "not run"}):
        found.append(Measured("DuckDB file", 1, False, results["file"][workload]))
    for count, target in lake_results(results):
        found.append(Measured("DuckLake", count, True, target[workload]))
        for name, figures in target.items():
            if workload == "small" and name.startswith("small_"):
                clients = name.split("_")[1]
                found.append(Measured(f"DuckLake, {clients} clients", int(count), True, figures))
    return found
