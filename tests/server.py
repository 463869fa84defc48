"""A real ``arrowport serve`` process on an ephemeral loopback port, for tests and benchmarks."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import yaml


class ArrowportProcess:
    """Starts the server with ``--port 0`` and learns the bound ports from its ready log line.

    Example::

        with ArrowportProcess(tmp_path) as server:
            httpx.get(server.url + "/health")
    """

    def __init__(
        self,
        workdir: Path,
        config: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
        args: list[str] | None = None,
        db_path: Path | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.db_path = db_path or self.workdir / "db.duckdb"
        self.config = config
        self.extra_env = env or {}
        self.extra_args = args or []
        self.lines: list[str] = []
        self.ready: dict[str, Any] = {}
        self.proc: subprocess.Popen[str] | None = None
        self._ready_event = threading.Event()

    # -- lifecycle -----------------------------------------------------------------------------

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "arrowport", "serve", "--port", "0", "--db", str(self.db_path)]
        if "--flight-port" not in self.extra_args:
            cmd += ["--flight-port", "0"]
        if self.config is not None:
            path = self.workdir / "config.yaml"
            path.write_text(yaml.safe_dump(self.config))
            cmd += ["--config", str(path)]
        return cmd + self.extra_args

    def start(self, timeout: float = 30.0) -> ArrowportProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ARROWPORT_")}
        env |= {"ARROWPORT_LOGGING_FORMAT": "json"} | self.extra_env
        # Each start has its own lines and event: the drain thread of a process killed just
        # before (a restart) may still be reading it, and must not mark this one as ended.
        self.lines = []
        self.ready = {}
        self._ready_event = threading.Event()
        self.proc = subprocess.Popen(
            self.command(),
            cwd=self.workdir,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        threading.Thread(
            target=self._drain, args=(self.proc, self.lines, self._ready_event), daemon=True
        ).start()
        if not self._ready_event.wait(timeout):
            self.kill()
            raise RuntimeError("server did not become ready:\n" + "\n".join(self.lines[-30:]))
        if not self.ready:
            raise RuntimeError("server exited during start-up:\n" + "\n".join(self.lines[-30:]))
        return self

    def _drain(self, proc: subprocess.Popen[str], lines: list[str], ready: threading.Event) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            line = line.rstrip("\n")
            lines.append(line)
            if not ready.is_set() and '"arrowport ready"' in line:
                self.ready = json.loads(line)
                ready.set()
        ready.set()

    @property
    def port(self) -> int:
        return int(self.ready["http_port"])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def flight_port(self) -> int:
        return int(self.ready["flight_port"])

    @property
    def flight_url(self) -> str:
        return f"grpc://127.0.0.1:{self.flight_port}"

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def peak_rss(self) -> int:
        """The server's peak resident memory so far, in bytes (Linux's VmHWM)."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmHWM")

    def healthy(self) -> bool:
        try:
            return httpx.get(self.url + "/health", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_for_exit(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.proc.wait(max(deadline - time.monotonic(), 0.1))

    def __enter__(self) -> ArrowportProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.alive():
            try:
                self.stop(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


def free_port() -> int:
    """A loopback TCP port nothing listens on now (for a server that must keep its port
    across a restart)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
