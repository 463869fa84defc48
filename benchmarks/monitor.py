"""Watching the server from outside: resident memory from /proc, and latency statistics."""

from __future__ import annotations

import os
import statistics
import threading
import time
from pathlib import Path
from typing import Self


def _status_kb(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def descendants(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    for child in list(found):
        found += descendants(child)
    return found


def tree_rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and all its descendants, in MB."""
    return sum(_status_kb(p, "VmRSS") for p in [pid, *descendants(pid)]) / 1024


def peak_rss_mb(pid: int) -> float:
    """The kernel's high-water mark of resident memory (VmHWM) for ``pid``, in MB."""
    return _status_kb(pid, "VmHWM") / 1024


class Background:
    """Runs :meth:`_run` on a daemon thread from ``__enter__`` until ``__exit__`` sets ``_stop``."""

    def __init__(self, name: str) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        raise NotImplementedError


class RssSampler(Background):
    """Samples the resident memory of a process tree every ``interval`` seconds in a thread."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        super().__init__("rss-sampler")
        self.pid = pid
        self.interval = interval
        self.peak_mb = 0.0
        self.samples = 0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, tree_rss_mb(self.pid))
            self.samples += 1
            self._stop.wait(self.interval)


def cpu_seconds(pid: int, reaped: bool = False) -> float:
    """User plus system CPU time of ``pid`` (all its threads) so far, from /proc; ``reaped``
    adds that of the children it has waited for (an exited PostgreSQL backend's time moves
    into the postmaster's)."""
    # The command name (field 2) may hold spaces; the fields after its ")" are fixed.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    counted = (11, 12, 13, 14) if reaped else (11, 12)
    return sum(int(fields[i]) for i in counted) / os.sysconf("SC_CLK_TCK")


class CpuUse:
    """CPU seconds the server process and this (load-generating) process spend in a block.

    On a machine whose load generator shares the cores with the server, a many-clients figure
    is capped by the two together; per request, they say which side to make cheaper.
    """

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid
        self.server = 0.0
        self.client = 0.0

    def __enter__(self) -> Self:
        self._server0 = cpu_seconds(self.server_pid)
        self._client0 = _own_cpu_seconds()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server = cpu_seconds(self.server_pid) - self._server0
        self.client = _own_cpu_seconds() - self._client0

    def per_request(self, requests: int) -> dict[str, float]:
        """Milliseconds of CPU per request, server and load generator."""
        return {
            "server_ms": self.server * 1000 / requests,
            "client_ms": self.client * 1000 / requests,
        }


def _own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0 to 100) by linear interpolation; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def latency_summary(seconds: list[float]) -> dict[str, float]:
    """p50 / p99 / max in milliseconds, and the sample count."""
    ms = [s * 1000 for s in seconds]
    return {
        "count": len(ms),
        "p50_ms": percentile(ms, 50),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms) if ms else float("nan"),
    }


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


class Stopwatch:
    """``with Stopwatch() as sw: ...; sw.seconds``."""

    def __enter__(self) -> Stopwatch:
        self.started = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.started
