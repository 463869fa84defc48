"""Start and stop a real PostgreSQL and a real S3-compatible server (moto) for the tests.

    python scripts/test_services.py start          # start (or reuse) both; writes .services/env
    python scripts/test_services.py stop           # stop both and remove the state
    python scripts/test_services.py run -- CMD...  # start, run CMD with the variables, stop
    python scripts/test_services.py pause-postgres # stop PostgreSQL only (a catalog outage)
    python scripts/test_services.py resume-postgres # and start it again, same port and data
    python scripts/test_services.py freeze-postgres # SIGSTOP it: a catalog that hangs
    python scripts/test_services.py thaw-postgres  # and SIGCONT it
    python scripts/test_services.py start-postgres # PostgreSQL alone (see below)

`.services/env` is a shell file of ARROWPORT_TEST_* variables: `set -a; . .services/env; set +a`.
Both servers listen on free loopback ports with throwaway credentials; nothing survives `stop`.

ARROWPORT_TEST_SERVICES_DIR names another state directory than `.services`: a second, independent
set. A test that stops or freezes its catalog starts a PostgreSQL of its own there
(`start-postgres`), so that the tests running beside it keep theirs.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pwd
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

STATE = Path(
    os.environ.get("ARROWPORT_TEST_SERVICES_DIR")
    or Path(__file__).resolve().parent.parent / ".services"
)
ENV_FILE = STATE / "env"
STATE_FILE = STATE / "state.json"
DATABASE = "arrowport_test"
PG_USER = "arrowport"
BUCKET = "arrowport-test"
REGION = "us-east-1"
START_TIMEOUT = 30
APT_TIMEOUT = 900


class ServiceError(Exception):
    """A service could not be started; the message says why."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


def wait_for(check: Callable[[], bool], what: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not check():
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise ServiceError(f"{what} not ready after {START_TIMEOUT}s; log {log}:\n{tail}")
        time.sleep(0.1)


def pg_bin_dir() -> Path:
    """The directory of initdb/pg_ctl, installing Debian's `postgresql` as root when missing."""

    def find() -> Path | None:
        on_path = shutil.which("pg_ctl")
        if on_path:
            return Path(on_path).resolve().parent
        # Debian keeps the server binaries off PATH.
        found = sorted(
            glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4])
        )
        return Path(found[-1]).parent if found else None

    if found := find():
        return found
    if os.geteuid() != 0:
        raise ServiceError(
            "PostgreSQL server binaries not found: install them "
            "(Debian: apt-get install postgresql), or run this as root to have them installed"
        )
    print("installing PostgreSQL (apt-get install postgresql)...", flush=True)
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    try:
        for cmd in (
            ["apt-get", "update", "-q"],
            ["apt-get", "install", "-q", "-y", "--no-install-recommends", "postgresql"],
        ):
            subprocess.run(cmd, check=True, env=env, timeout=APT_TIMEOUT, stdout=subprocess.DEVNULL)
    except (subprocess.SubprocessError, OSError) as e:
        raise ServiceError(f"installing PostgreSQL failed: {e}") from e
    if found := find():
        return found
    raise ServiceError("PostgreSQL installed but pg_ctl not found")


def as_pg_owner() -> dict[str, Any]:
    # PostgreSQL refuses to run as root; Debian's package creates the `postgres` user.
    return {"user": "postgres", "group": "postgres"} if os.geteuid() == 0 else {}


def start_postgres() -> dict[str, Any]:
    bindir, owner = pg_bin_dir(), as_pg_owner()
    if owner:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            raise ServiceError("as root, PostgreSQL needs a `postgres` OS user to run as") from None
    # Outside the repository: the postgres user must reach it, and socket paths must stay short.
    data = Path(tempfile.mkdtemp(prefix="arrowport-pg-"))
    port, password = free_port(), secrets.token_hex(16)
    pwfile = data / "pwfile"
    pwfile.write_text(password + "\n")
    if owner:
        for path in (data, pwfile):
            shutil.chown(path, "postgres", "postgres")
    pgdata, log = data / "pgdata", data / "postgres.log"
    state = {"pg_data": str(data), "pg_bin": str(bindir), "pg_port": port, "pg_password": password}
    STATE_FILE.write_text(json.dumps(state))  # before starting, so that `stop` can clean up
    opts = dict(check=True, capture_output=True, text=True, timeout=START_TIMEOUT, **owner)
    try:
        initdb = [bindir / "initdb", "-D", pgdata, "-U", PG_USER, "--pwfile", pwfile]
        subprocess.run(
            [*initdb, "-A", "scram-sha-256", "--no-sync", "-E", "UTF8", "--locale", "C"], **opts
        )
        pwfile.unlink()
        conf = (
            f"listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{data}'\n"
            # Throwaway data: durability only costs time.
            "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
        )
        with open(pgdata / "postgresql.conf", "a") as f:
            f.write(conf)
        # Own session: a Ctrl-C in the terminal must not stop the server under the tests.
        subprocess.run(
            [bindir / "pg_ctl", "-D", pgdata, "-l", log, "-w", "-t", str(START_TIMEOUT), "start"],
            start_new_session=True,
            **opts,
        )
        env = os.environ | {"PGPASSWORD": password}
        subprocess.run(
            [bindir / "createdb", "-h", "127.0.0.1", "-p", str(port), "-U", PG_USER, DATABASE],
            **(opts | {"env": env}),
        )
    except subprocess.CalledProcessError as e:
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise ServiceError(f"{Path(e.cmd[0]).name} failed: {e.stderr.strip()}\n{tail}") from e
    except subprocess.TimeoutExpired as e:
        raise ServiceError(f"{Path(e.cmd[0]).name} did not finish in {START_TIMEOUT}s") from e
    return state


def start_s3(state: dict[str, Any]) -> dict[str, Any]:
    port, log = free_port(), STATE / "moto.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    state |= {
        "s3_pid": proc.pid,
        "s3_port": port,
        "s3_key_id": "arrowport",
        "s3_secret": secrets.token_hex(16),
    }
    STATE_FILE.write_text(json.dumps(state))

    def ready() -> bool:
        if proc.poll() is not None:
            raise ServiceError(
                f"moto exited with {proc.returncode}; log {log}:\n{log.read_text()[-2000:]}"
            )
        return port_open(port)

    wait_for(ready, "moto S3 server", log)
    # moto does not check signatures, so an unsigned PUT creates the bucket.
    request = urllib.request.Request(f"http://127.0.0.1:{port}/{BUCKET}", method="PUT")
    try:
        urllib.request.urlopen(request, timeout=10).close()
    except OSError as e:
        raise ServiceError(f"creating bucket {BUCKET} failed: {e}") from e
    return state


def pg_env(state: dict[str, Any]) -> dict[str, str]:
    return {
        "ARROWPORT_TEST_PG_DSN": f"dbname={DATABASE} host=127.0.0.1 port={state['pg_port']} "
        f"user={PG_USER} password={state['pg_password']}"
    }


def env_vars(state: dict[str, Any]) -> dict[str, str]:
    return pg_env(state) | {
        "ARROWPORT_TEST_S3_ENDPOINT": f"127.0.0.1:{state['s3_port']}",
        "ARROWPORT_TEST_S3_BUCKET": BUCKET,
        "ARROWPORT_TEST_S3_KEY_ID": state["s3_key_id"],
        "ARROWPORT_TEST_S3_SECRET": state["s3_secret"],
        "ARROWPORT_TEST_S3_REGION": REGION,
    }


def running(state: dict[str, Any]) -> bool:
    return (
        "s3_pid" in state
        and pid_alive(state["s3_pid"])
        and port_open(state["s3_port"])
        and port_open(state["pg_port"])
    )


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    # A recycled pid must not be mistaken for (and later killed as) our server.
    with contextlib.suppress(OSError):
        return b"moto.server" in Path(f"/proc/{pid}/cmdline").read_bytes()
    return True


def load_state() -> dict[str, Any]:
    try:
        return dict(json.loads(STATE_FILE.read_text()))
    except (OSError, ValueError):
        return {}


def start() -> bool:
    """Start both services, or reuse them when already running; True when started here."""
    if running(state := load_state()) and ENV_FILE.exists():
        print(f"test services already running ({ENV_FILE})", flush=True)
        return False
    stop()  # whatever is left of an earlier, broken start
    STATE.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    try:
        state = start_s3(start_postgres())
    except BaseException:
        stop()
        raise
    write_env(env_vars(state))
    took, pg, s3 = time.monotonic() - t0, state["pg_port"], state["s3_port"]
    print(f"test services up in {took:.1f}s: PostgreSQL :{pg}, S3 :{s3} ({ENV_FILE})", flush=True)
    return True


def write_env(variables: dict[str, str]) -> None:
    ENV_FILE.write_text("".join(f"{k}={shlex.quote(v)}\n" for k, v in variables.items()))


def start_postgres_alone() -> None:
    """PostgreSQL only, in a state directory of its own (replacing what was there)."""
    stop()
    STATE.mkdir(parents=True, exist_ok=True)
    try:
        write_env(pg_env(start_postgres()))
    except BaseException:
        stop()
        raise


def stop() -> None:
    state = load_state()
    with contextlib.suppress(ServiceError, OSError, ValueError):
        pg_signal(signal.SIGCONT)  # a test that froze it may have died before thawing it
    if data := state.get("pg_data"):
        pgdata = Path(data) / "pgdata"
        if (pgdata / "postmaster.pid").exists():
            pg_ctl = Path(state["pg_bin"]) / "pg_ctl"
            cmd = [pg_ctl, "-D", pgdata, "-m", "immediate", "-w", "-t", str(START_TIMEOUT), "stop"]
            with contextlib.suppress(subprocess.SubprocessError):
                subprocess.run(cmd, capture_output=True, timeout=START_TIMEOUT + 5, **as_pg_owner())
        shutil.rmtree(data, ignore_errors=True)
    if (pid := state.get("s3_pid")) and pid_alive(pid):
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)
    shutil.rmtree(STATE, ignore_errors=True)


def pg_ctl(action: list[str]) -> None:
    """Run pg_ctl on the running services' PostgreSQL (for tests of a catalog outage)."""
    state = load_state()
    if not state.get("pg_data"):
        raise ServiceError("the test services are not running")
    data = Path(state["pg_data"])
    cmd = [Path(state["pg_bin"]) / "pg_ctl", "-D", data / "pgdata", "-w", "-t", str(START_TIMEOUT)]
    subprocess.run(
        [*cmd, "-l", data / "postgres.log", *action],
        check=True,
        capture_output=True,
        timeout=START_TIMEOUT + 5,
        start_new_session=True,
        **as_pg_owner(),
    )


def pg_signal(signum: int) -> None:
    """Signal every process of the services' PostgreSQL (SIGSTOP: its connections stay open
    and nothing answers, as a hung server does)."""
    state = load_state()
    if not state.get("pg_data"):
        raise ServiceError("the test services are not running")
    pid_file = Path(state["pg_data"]) / "pgdata" / "postmaster.pid"
    postmaster = int(pid_file.read_text().split()[0])
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            # The parent pid is the second field after the parenthesised command name.
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == postmaster:
                children.append(int(stat.parent.name))
    for pid in [postmaster, *children]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def run(cmd: list[str]) -> int:
    """Run ``cmd`` with the services' variables; stop the services afterwards if started here."""
    # SIGTERM (e.g. from CI) must still reach the `finally` that stops the services.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = start()
    try:
        return subprocess.run(cmd, env=os.environ | env_vars(load_state())).returncode
    except KeyboardInterrupt:
        return 130
    finally:
        if started:
            stop()


def main(argv: list[str]) -> int:
    match argv:
        case ["start"]:
            start()
        case ["stop"]:
            stop()
        case ["run", "--", *cmd] if cmd:
            return run(cmd)
        case ["start-postgres"]:
            start_postgres_alone()
        case ["pause-postgres"]:
            pg_ctl(["-m", "fast", "stop"])
        case ["resume-postgres"]:
            pg_ctl(["start"])
        case ["freeze-postgres"]:
            pg_signal(signal.SIGSTOP)
        case ["thaw-postgres"]:
            pg_signal(signal.SIGCONT)
        case _:
            print(__doc__, file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except ServiceError as e:
        print(f"test services: {e}", file=sys.stderr)
        sys.exit(1)
