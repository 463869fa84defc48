"""DuckDB in this process attached to a lake exactly as a node attaches one — the extensions
from their PyPI packages, an S3 secret, ``ATTACH 'ducklake:postgres:…'`` — so that the in-process
limits are measured on the same kind of lake the nodes write to, and so that a lake can be
emptied afterwards through the same catalog and store."""

from __future__ import annotations

import contextlib
from typing import Any

import duckdb

from arrowport.storage.lake_catalog import CatalogLocation


def literal(value: str) -> str:
    """``value`` as a SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


class LakeSession:
    """DuckDB in this process attached to a lake the way a node attaches it
    (:mod:`arrowport.storage.lake`): extensions from their PyPI packages, never downloaded; an
    S3 secret; ``ATTACH 'ducklake:postgres:…' (DATA_PATH …, METADATA_SCHEMA …)``.

    Example::

        with LakeSession(lake_config(name)["ducklake"]) as con:
            con.execute("CREATE TABLE t (x BIGINT)")
    """

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings
        self._con: duckdb.DuckDBPyConnection | None = None

    def __enter__(self) -> duckdb.DuckDBPyConnection:
        import duckdb_extensions

        s = self.settings
        con = self._con = duckdb.connect(
            ":memory:",
            config={"autoinstall_known_extensions": False, "autoload_known_extensions": False},
        )
        for name in ("ducklake", "postgres", "httpfs"):
            duckdb_extensions.import_extension(name, con=con)
            con.execute(f"LOAD {name}")
        secret = [
            "TYPE s3",
            f"REGION {literal(s['s3_region'])}",
            f"URL_STYLE {literal(s['s3_url_style'])}",
            f"USE_SSL {'true' if s['s3_use_ssl'] else 'false'}",
            f"ENDPOINT {literal(s['s3_endpoint'])}",
            f"KEY_ID {literal(s['s3_key_id'])}",
            f"SECRET {literal(s['s3_secret'])}",
        ]
        con.execute(f"CREATE SECRET lake_s3 ({', '.join(secret)})")
        attach = literal("ducklake:" + CatalogLocation.parse(s["catalog"]).attach_path)
        con.execute(
            f"ATTACH {attach} AS lake (DATA_PATH {literal(s['data_path'])}, "
            f"METADATA_SCHEMA {literal(s['metadata_schema'])})"
        )
        con.execute("USE lake")
        return con

    def __exit__(self, *exc: object) -> None:
        if self._con is not None:
            with contextlib.suppress(duckdb.Error):
                self._con.execute("USE memory")
                self._con.execute("DETACH lake")  # closes its catalog connections
            self._con.close()
