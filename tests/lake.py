"""A fresh DuckLake for a test: a PostgreSQL catalog and S3 data from the test services.

``make test`` starts a real PostgreSQL and a real S3-compatible server and names them in
``ARROWPORT_TEST_*`` variables (scripts/test_services.py); a test that needs a lake fails, not
skips, without them. Every lake gets a catalog schema and a data prefix of its own; a test that
stops or freezes its catalog starts a PostgreSQL of its own (``OwnCatalog``), since other tests
run beside it.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

SERVICES_SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "test_services.py"
SERVICE_VARIABLES = (
    "ARROWPORT_TEST_PG_DSN",
    "ARROWPORT_TEST_S3_ENDPOINT",
    "ARROWPORT_TEST_S3_BUCKET",
    "ARROWPORT_TEST_S3_KEY_ID",
    "ARROWPORT_TEST_S3_SECRET",
    "ARROWPORT_TEST_S3_REGION",
)


def services() -> dict[str, str]:
    missing = [name for name in SERVICE_VARIABLES if not os.environ.get(name)]
    if missing:
        pytest.fail(
            f"the test services are not running ({', '.join(missing)} unset): run the tests "
            "with `make test`, or `python scripts/test_services.py run -- pytest ...`"
        )
    return {name: os.environ[name] for name in SERVICE_VARIABLES}


def new_lake_name(label: str = "lake") -> str:
    return f"{label}_{uuid.uuid4().hex[:10]}"


def lake_config(name: str | None = None, **ducklake: Any) -> dict[str, Any]:
    """Server configuration for the lake called ``name`` (a new one by default): nodes given
    the same name share one lake."""
    env = services()
    name = name or new_lake_name()
    settings: dict[str, Any] = {
        "catalog": "postgres:" + env["ARROWPORT_TEST_PG_DSN"],
        "metadata_schema": name,
        "data_path": f"s3://{env['ARROWPORT_TEST_S3_BUCKET']}/{name}/",
        "s3_endpoint": env["ARROWPORT_TEST_S3_ENDPOINT"],
        "s3_key_id": env["ARROWPORT_TEST_S3_KEY_ID"],
        "s3_secret": env["ARROWPORT_TEST_S3_SECRET"],
        "s3_region": env["ARROWPORT_TEST_S3_REGION"],
        "s3_url_style": "path",
        "s3_use_ssl": False,
    }
    return {"storage": {"target": "ducklake"}, "ducklake": settings | ducklake}


class OwnCatalog:
    """A PostgreSQL for one test's lake catalog, which it may stop (``pause``, ``resume``) or
    freeze (``freeze``, ``thaw``) without disturbing the tests running beside it. ``env`` makes
    the services script, run by a process the test starts, control this one."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.env = {"ARROWPORT_TEST_SERVICES_DIR": str(directory)}
        self.control("start")
        variables = dict(
            line.split("=", 1) for line in (directory / "env").read_text().splitlines()
        )
        self.dsn = shlex.split(variables["ARROWPORT_TEST_PG_DSN"])[0]

    def lake_config(self) -> dict[str, Any]:
        return lake_config(catalog="postgres:" + self.dsn)

    def control(self, action: str) -> None:
        done = subprocess.run(
            [sys.executable, str(SERVICES_SCRIPT), f"{action}-postgres"],
            env=os.environ | self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, f"{action}-postgres: {done.stdout}{done.stderr}"

    def stop(self) -> None:
        subprocess.run(
            [sys.executable, str(SERVICES_SCRIPT), "stop"], env=os.environ | self.env, timeout=120
        )
