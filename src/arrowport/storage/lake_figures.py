"""What a lake reports to the metrics: its size, data files and snapshots (read in the
background, so that a scrape never waits on the catalog), and its maintenance runs."""

from __future__ import annotations

import duckdb

from arrowport.storage.lake_open import LAKE

FIGURES_SECONDS = 10.0


def lake_counts(cur: duckdb.DuckDBPyConnection) -> tuple[int, int]:
    """(data files, snapshots) of the lake."""
    files = cur.execute(f"SELECT sum(file_count) FROM ducklake_table_info('{LAKE}')").fetchone()
    snapshots = cur.execute(f"SELECT count(*) FROM {LAKE}.snapshots()").fetchone()
    return (
        int(files[0]) if files and files[0] is not None else 0,
        int(snapshots[0]) if snapshots else 0,
    )


def read_figures(cur: duckdb.DuckDBPyConnection) -> dict[str, float]:
    """The lake's ``size_bytes``, ``lake_data_files`` and ``lake_snapshots``."""
    row = cur.execute(
        f"SELECT sum(file_size_bytes + delete_file_size_bytes) FROM ducklake_table_info('{LAKE}')"
    ).fetchone()
    files, snapshots = lake_counts(cur)
    size = float(row[0]) if row and row[0] is not None else 0.0
    return {"size_bytes": size, "lake_data_files": files, "lake_snapshots": snapshots}


class MaintenanceRecorder:
    """Counts maintenance runs for the metrics (storage does not know the registry)."""

    def __init__(self) -> None:
        self.runs: dict[str, int] = {"ok": 0, "failed": 0}
        self.last_seconds = 0.0

    def ran(self, outcome: str, seconds: float) -> None:
        self.runs[outcome] = self.runs.get(outcome, 0) + 1
        self.last_seconds = seconds

    def figures(self) -> dict[str, float]:
        found: dict[str, float] = {
            f"lake_maintenance_runs_{outcome}_total": runs for outcome, runs in self.runs.items()
        }
        found["lake_maintenance_last_seconds"] = self.last_seconds
        return found
