"""CPU and listeners of the processes involved, read from ``/proc``: the CPU seconds of a
process tree (a node, PostgreSQL with its backends, the S3 server) and of the whole machine, and
which process listens on a loopback port (how the test services' servers are found). Reading
``/proc`` directly needs no extra package and sees every process the benchmark did not start."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from benchmarks.monitor import cpu_seconds, descendants

_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds_of(pid: int) -> float:
    """:func:`cpu_seconds` with reaped children; 0 for a process that has gone."""
    try:
        return cpu_seconds(pid, reaped=True)
    except OSError:
        return 0.0


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and every live descendant, so far."""
    return sum(_cpu_seconds_of(p) for p in [pid, *descendants(pid)])


def machine_cpu_seconds() -> float:
    """CPU seconds every core of the machine has been busy, so far (anyone's work)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    # user nice system idle iowait irq softirq steal: busy is all but idle and iowait
    busy = [int(v) for i, v in enumerate(fields[:8]) if i not in (3, 4)]
    return sum(busy) / _TICKS


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{fields[9]}]")
    return inodes


def listener_pid(port: int) -> int | None:
    """The process listening on loopback ``port`` (None when it is not ours to see)."""
    wanted = _listening_inodes(port)
    for proc in Path("/proc").iterdir():
        if not wanted or not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if any(os.readlink(fd) in wanted for fd in (proc / "fd").iterdir()):
                return int(proc.name)
    return None
