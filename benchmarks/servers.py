"""Starting a fresh server (own directory, own database file) per case, optionally under py-spy."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from tests.server import ArrowportProcess


def flight_flag_supported() -> bool:
    """True when ``arrowport serve`` accepts ``--flight-port``."""
    done = subprocess.run(
        [sys.executable, "-m", "arrowport", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return "--flight-port" in done.stdout


class Profiler:
    """Attaches ``py-spy record`` to each server; writes ``<directory>/<case>.<ext>`` on detach."""

    _EXT = {"flamegraph": "svg", "speedscope": "json", "raw": "txt"}

    def __init__(self, directory: Path, fmt: str = "flamegraph", native: bool = False) -> None:
        self.directory = directory
        self.fmt = fmt
        self.native = native
        self.py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        directory.mkdir(parents=True, exist_ok=True)

    @contextmanager
    def attached(self, pid: int, case: str) -> Iterator[Path]:
        out = self.directory / f"{case}.{self._EXT[self.fmt]}"
        cmd = [self.py_spy, "record", "--pid", str(pid), "--output", str(out)]
        cmd += ["--format", self.fmt, "--rate", "100", "--threads"]
        if self.native:
            cmd.append("--native")
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            yield out
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                _, err = proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
            if not out.exists():
                print(f"  py-spy wrote no profile for {case}: {err.strip()[-300:]}")


class Servers:
    """Fresh servers under ``root``; each case gets its own directory and database file."""

    def __init__(self, root: Path, flight: bool, profiler: Profiler | None, keep: bool) -> None:
        self.root = root
        self.flight = flight
        self.profiler = profiler
        self.keep = keep

    @contextmanager
    def start(self, case: str) -> Iterator[ArrowportProcess]:
        workdir = self.root / case
        shutil.rmtree(workdir, ignore_errors=True)
        args = ["--flight-port", "0"] if self.flight else []
        server = ArrowportProcess(workdir, args=args)
        server.start(timeout=60)
        try:
            if self.profiler is not None:
                with self.profiler.attached(server.proc.pid, case):  # type: ignore[union-attr]
                    yield server
            else:
                yield server
        except BaseException:
            tail = [line for line in server.lines if '"request"' not in line][-15:]
            print(f"\n  server log of {case} (last lines):\n    " + "\n    ".join(tail))
            raise
        finally:
            if server.alive():
                try:
                    server.stop(timeout=120)
                except subprocess.TimeoutExpired:
                    server.kill()
            if not self.keep:
                shutil.rmtree(workdir, ignore_errors=True)


def flight_port(server: ArrowportProcess) -> int | None:
    port = server.ready.get("flight_port")
    return int(port) if port else None


def row_stats_sql(table: str) -> str:
    """The query behind every landed-rows check: ``rows``, ``distinct_ids`` and ``id_sum``."""
    return (
        "SELECT count(*) AS rows, count(DISTINCT id) AS distinct_ids, "
        f'CAST(coalesce(sum(id), 0) AS BIGINT) AS id_sum FROM "{table}"'
    )


def row_stats(server: ArrowportProcess, table: str) -> dict[str, Any]:
    """:func:`row_stats_sql` of a table, read back through ``POST /query``."""
    sql = row_stats_sql(table)
    response = httpx.post(
        server.url + "/query",
        json={"sql": sql},
        headers={"Accept": "application/json"},
        timeout=300,
    )
    response.raise_for_status()
    row: dict[str, Any] = response.json()["rows"][0]
    return row
