"""A fresh DuckLake for a test: a PostgreSQL catalog and S3 data from the test services.

``make test`` starts a real PostgreSQL and a real S3-compatible server and names them in
``ARROWPORT_TEST_*`` variables (scripts/test_services.py); a test that needs a lake fails, not
skips, without them. Every lake gets a catalog schema and a data prefix of its own.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import pytest

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
