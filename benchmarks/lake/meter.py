"""What a workload costs: wall time, the CPU seconds of every watched process (the nodes, the
test services, and this process as the load generator), the whole machine's busy CPU, and the
lake commits made, all taken as differences across a ``with`` block. Every figure the tables
print per workload beyond rows/s and latency comes from a :class:`Meter`."""

from __future__ import annotations

import os
import time
from typing import Any

from benchmarks.lake.procfs import machine_cpu_seconds, tree_cpu_seconds
from benchmarks.lake.services import Services, snapshot_count


class Meter:
    """Wall time and CPU seconds of the watched processes (and of this one, the load generator)
    across a ``with`` block; with ``lake`` also the lake commits it made.

    Example::

        with Meter({"node0": pid}, services, lake="lake_ab12") as meter:
            ...
        meter.usage  # {"wall_s": ..., "cpu_s": {...}, "lake_commits": ...}
    """

    def __init__(
        self, pids: dict[str, int | None], services: Services, lake: str | None = None
    ) -> None:
        self.pids = {name: pid for name, pid in pids.items() if pid is not None}
        self.services = services
        self.lake = lake
        self.usage: dict[str, Any] = {}

    def _cpu(self) -> dict[str, float]:
        cpu = {name: tree_cpu_seconds(pid) for name, pid in self.pids.items()}
        own = os.times()
        return cpu | {"load generator": own.user + own.system}

    def _commits(self) -> int:
        return snapshot_count(self.services.dsn, self.lake) if self.lake else 0

    def __enter__(self) -> Meter:
        self._commits_before = self._commits()
        self._machine_before = machine_cpu_seconds()
        self._cpu_before = self._cpu()
        self._started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.perf_counter() - self._started
        cpu = self._cpu()
        self.usage = {
            "wall_s": wall,
            "cpu_s": {name: cpu[name] - self._cpu_before[name] for name in cpu},
            "machine_cpu_s": machine_cpu_seconds() - self._machine_before,
        }
        if self.lake:
            self.usage["lake_commits"] = self._commits() - self._commits_before
