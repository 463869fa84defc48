"""Several server processes on one machine (``arrowport serve --workers N``), for a lake only.

A DuckDB file has one writer process; a DuckLake with a PostgreSQL or SQLite catalog takes
many, so on a big machine N processes use N times the cores one Python process can. This
process supervises: it settles the ports (a free one where 0 was asked for), starts N workers
with the same settings that all listen on those ports (``SO_REUSEPORT``: the kernel spreads
connections across them; each worker reads the settings from a pipe on its standard input, so
that no secret in them is ever written to disk), restarts a worker that dies (backing off one that keeps dying), and
on SIGTERM, SIGHUP or Ctrl-C passes SIGTERM on and waits for every worker to finish its writes (one
still running past the shutdown timeout is killed). Workers get SIGTERM if the supervisor
itself dies, so none is left unsupervised. Worker ``i`` serves its metrics on
``api.metrics_port + i`` when a metrics port is set (each process counts its own).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from types import FrameType

import structlog
import yaml

from arrowport.config import Settings
from arrowport.logs import lifecycle
from arrowport.storage.lake_catalog import CatalogLocation

log = structlog.get_logger("arrowport")

# Set for a worker by its supervisor: which worker it is (it listens with SO_REUSEPORT), and
# the pipe (a file descriptor it inherits) on which it says that it serves.
WORKER_INDEX = "ARROWPORT_WORKER_INDEX"
WORKER_READY = "ARROWPORT_WORKER_READY"
_RESTART_DELAY = 1.0
_MAX_RESTART_DELAY = 60.0
_STABLE_SECONDS = 60.0  # a worker that ran this long was not crash-looping
_PR_SET_PDEATHSIG = 1


def worker_index() -> int | None:
    """This process's index among its supervisor's workers (None: not a worker)."""
    index = os.environ.get(WORKER_INDEX)
    return int(index) if index is not None else None


def report_ready() -> None:
    """Tell the supervisor that this worker serves."""
    ready = os.environ.pop(WORKER_READY, None)  # once: the descriptor is closed after it
    if ready:
        with contextlib.suppress(OSError, ValueError):  # a supervisor gone: nobody to tell
            os.write(int(ready), b"ready\n")
            os.close(int(ready))


def refusal(settings: Settings) -> str | None:
    """Why these settings cannot run several workers (None: they can)."""
    if settings.api.workers <= 1:
        return None
    if settings.storage.target != "ducklake":
        return (
            "--workers needs storage.target: ducklake; a DuckDB file has one writer process "
            "(run one process, or move to a DuckLake)"
        )
    catalog = settings.ducklake.catalog or ""
    if not CatalogLocation.parse(catalog).many_processes:
        return (
            "--workers needs a lake catalog several processes can share (PostgreSQL or SQLite); "
            "a DuckDB-file catalog has one process"
        )
    return None


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host.strip("[]"), 0))
        return int(probe.getsockname()[1])


def supervise(settings: Settings) -> int:
    host = settings.api.host
    worker_settings = settings.model_copy(deep=True)
    worker_settings.api.workers = 1
    if worker_settings.api.port == 0:
        worker_settings.api.port = _free_port(host)
    if worker_settings.flight.enabled and worker_settings.flight.port == 0:
        worker_settings.flight.port = _free_port(worker_settings.flight.host or host)
    # Read by each worker from its standard input, never written to a file: they may hold
    # secrets (tokens, the catalog's password, S3 keys).
    settings_text = yaml.safe_dump(worker_settings.model_dump(mode="json")).encode()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARROWPORT_")}
    command = [sys.executable, "-m", "arrowport", "serve", "--config", "/dev/stdin"]
    announce: dict[str, object] = {
        "http_port": worker_settings.api.port,
        "workers": settings.api.workers,
        "storage": settings.storage.target,
        "database": "lake",
    }
    if worker_settings.flight.enabled:
        announce["flight_port"] = worker_settings.flight.port
    grace = settings.limits.shutdown_timeout_seconds + 15.0
    return _Supervisor(command, env, settings_text, settings.api.workers, announce, grace).run()


def _feed(worker: subprocess.Popen[bytes], settings_text: bytes) -> None:
    """Write a worker's settings to its standard input, and close it."""
    assert worker.stdin is not None
    with contextlib.suppress(OSError):
        worker.stdin.write(settings_text)
    with contextlib.suppress(OSError):
        worker.stdin.close()


def _die_with_supervisor() -> None:
    """In a worker, before it runs: be sent SIGTERM when the supervisor dies (even by SIGKILL),
    so no worker outlives it unsupervised."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class _Supervisor:
    def __init__(
        self,
        command: list[str],
        env: dict[str, str],
        settings_text: bytes,
        count: int,
        announce: dict[str, object],
        grace: float,
    ) -> None:
        self._command = command
        self._env = env
        self._settings_text = settings_text
        self._workers: list[subprocess.Popen[bytes] | None] = [None] * count
        self._started = [0.0] * count
        self._restarts = [0] * count
        # The read end of each worker's readiness pipe, and the workers that said they serve.
        self._ready_pipes: list[int | None] = [None] * count
        self._serving: set[int] = set()
        self._announce = announce
        self._grace = grace  # how long workers may take to finish their writes when stopped
        self._stopping = False

    def _start(self, index: int) -> None:
        self._close_ready_pipe(index)
        self._serving.discard(index)
        ready, tell = os.pipe()
        os.set_blocking(ready, False)
        env = self._env | {WORKER_INDEX: str(index), WORKER_READY: str(tell)}
        try:
            worker = subprocess.Popen(
                self._command,
                env=env,
                stdin=subprocess.PIPE,
                pass_fds=(tell,),
                preexec_fn=_die_with_supervisor,
            )
        except BaseException:
            os.close(ready)
            raise
        finally:
            os.close(tell)
        self._ready_pipes[index] = ready
        self._workers[index] = worker
        self._started[index] = time.monotonic()
        # Fed from a thread: settings larger than the pipe's buffer would otherwise hold the
        # supervisor until this worker reads them (and a worker that dies first is simply
        # started again).
        threading.Thread(
            target=_feed, args=(worker, self._settings_text), name="arrowport-settings", daemon=True
        ).start()

    def _close_ready_pipe(self, index: int) -> None:
        ready = self._ready_pipes[index]
        if ready is not None:
            os.close(ready)
            self._ready_pipes[index] = None

    def _starting(self) -> bool | None:
        """While the first start is under way: True; once every worker serves: False; None
        when a worker exited before it served (the settings, or the lake, are at fault)."""
        for index, worker in enumerate(self._workers):
            if worker is not None and worker.poll() is not None:
                return None
            ready = self._ready_pipes[index]
            if index not in self._serving and ready is not None:
                with contextlib.suppress(BlockingIOError):
                    if os.read(ready, 64):
                        self._serving.add(index)
        return len(self._serving) < len(self._workers)

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True
        for worker in self._workers:
            if worker is not None and worker.poll() is None:
                worker.send_signal(signal.SIGTERM)

    def _wait_all(self) -> None:
        """Wait for every worker to finish; one still running past the grace is killed."""
        deadline = time.monotonic() + self._grace
        for worker in self._workers:
            if worker is None:
                continue
            try:
                worker.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("a worker did not stop in time; killing it", pid=worker.pid)
                worker.kill()
                worker.wait()

    def _restart_delay(self, index: int) -> float:
        """Back off a worker that keeps dying (1 s, doubling to a minute); one that ran for a
        while starts again at once."""
        if time.monotonic() - self._started[index] > _STABLE_SECONDS:
            self._restarts[index] = 0
        self._restarts[index] += 1
        return float(min(_MAX_RESTART_DELAY, _RESTART_DELAY * 2 ** (self._restarts[index] - 1)))

    def run(self) -> int:
        # A hang-up stops the workers as SIGTERM does (they drain), as a single process's does.
        for stop_signal in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(stop_signal, self._stop)
        for index in range(len(self._workers)):
            self._start(index)
        starting: bool | None = True
        while not self._stopping and (starting := self._starting()):
            time.sleep(0.05)
        if not self._stopping and starting is None:
            log.error("a worker could not start; stopping the others")
            self._stop(signal.SIGTERM, None)
            self._wait_all()
            return 1
        if not self._stopping:
            lifecycle().info("arrowport ready", **self._announce)
        due: dict[int, float] = {}  # workers to start again, and when
        while not self._stopping:
            time.sleep(0.2)
            now = time.monotonic()
            for index, worker in enumerate(self._workers):
                if index in due:
                    if now >= due[index] and not self._stopping:
                        del due[index]
                        self._start(index)
                elif worker is not None and worker.poll() is not None:
                    delay = self._restart_delay(index)
                    log.warning(
                        "a worker stopped; starting it again",
                        worker=index,
                        code=worker.returncode,
                        in_seconds=delay,
                    )
                    due[index] = now + delay
        self._wait_all()
        for index in range(len(self._workers)):
            self._close_ready_pipe(index)
        codes = [w.returncode for w in self._workers if w is not None]
        return 0 if all(code == 0 for code in codes) else 1
