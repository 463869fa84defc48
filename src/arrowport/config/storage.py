"""Where data lands: the DuckDB file, the storage target and the DuckLake."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from arrowport.config.base import Section


class DuckDBSettings(Section):
    path: str = Field(
        "data/db.duckdb", description="Database file (parent directory is created); :memory: works."
    )

    @field_validator("path")
    @classmethod
    def _named_path(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("expected a file path (or :memory: for a database that is not kept)")
        return value

    threads: int | None = Field(None, ge=1, description="DuckDB worker threads (unset: all cores).")
    memory_limit: str | None = Field(
        "192MB",
        description="DuckDB's buffer memory limit (keeps a server flat during huge ingests; raise "
        "it for heavy queries, which spill to disk above it; unset: 80% of RAM). A DuckLake "
        "node defaults to 1GB: its Parquet writers buffer whole row groups.",
    )
    checkpoint_wal_bytes: int = Field(
        64 * 1024**2,
        ge=1024**2,
        description="Checkpoint (in the background) once the write-ahead log is this large.",
    )
    max_temp_directory_size: str = Field(
        "2GB",
        description="Most disk DuckDB may use for spilling large queries and inserts (an error "
        "above it, not a full disk).",
    )
    allow_file_access: bool = Field(
        False,
        description="Let queries read files named by a literal path (read_csv('...'), "
        "read_parquet...; never the database's own files); off, queries see only this database.",
    )


class StorageSettings(Section):
    target: Literal["duckdb", "ducklake"] = Field(
        "duckdb",
        description="Where data lands: a DuckDB file (duckdb.path; one process) or a DuckLake "
        "shared by many nodes (ducklake.*).",
    )


class DuckLakeSettings(Section):
    catalog: str | None = Field(
        None,
        description="The lake's catalog: 'postgres:dbname=… host=… user=…' (many nodes), "
        "'sqlite:/path/lake.sqlite' (processes of one machine) or a DuckDB file path (one "
        "process).",
    )
    catalog_password: str | None = Field(
        None, description="Password of a PostgreSQL catalog (never logged; or the file below)."
    )
    catalog_password_file: str | None = Field(
        None, description="File holding the PostgreSQL catalog's password."
    )
    metadata_schema: str | None = Field(
        None, description="PostgreSQL schema of the catalog's tables (unset: DuckLake's default)."
    )
    data_path: str | None = Field(
        None,
        description="Where the lake's Parquet files live: a local directory or "
        "'s3://bucket/prefix/' (any S3-compatible store).",
    )
    s3_endpoint: str | None = Field(
        None, description="host:port of an S3-compatible store (unset: AWS)."
    )
    s3_region: str = Field("us-east-1", description="S3 region.")
    s3_key_id: str | None = Field(None, description="S3 access key id.")
    s3_secret: str | None = Field(
        None, description="S3 secret access key (never logged; or the file below)."
    )
    s3_secret_file: str | None = Field(None, description="File holding the S3 secret access key.")
    s3_url_style: Literal["vhost", "path"] = Field(
        "vhost", description="S3 addressing: vhost (AWS) or path (most self-hosted stores)."
    )
    s3_use_ssl: bool = Field(True, description="Reach the S3 store over HTTPS.")
    store_timeout_seconds: int = Field(
        10,
        ge=1,
        le=3600,
        description="Longest one try of an S3 request may wait on the store (an upload: may "
        "move under 1 KB/s). A store that hangs fails a query 503 storage_unavailable after "
        "about (store_retries + 1) times this, a write after a few times that (it makes several "
        "requests), and /ready within this plus 5 s; later writes are then refused at once "
        "until it answers.",
    )
    store_retries: int = Field(
        2, ge=0, le=10, description="Times a failed or timed-out S3 request is tried again."
    )
    data_inlining_row_limit: int | None = Field(
        None,
        ge=0,
        description="Inserts of at most this many rows are kept in the catalog until maintenance "
        "writes them to Parquet (unset: DuckLake's default).",
    )
    max_retries: int = Field(
        8,
        ge=0,
        description="Retries of a commit the lake refused (a concurrent commit, a catalog blip), "
        "with backoff and jitter, before a retryable 503.",
    )
    maintenance_interval_seconds: float | None = Field(
        None,
        gt=0,
        description="Run lake maintenance this often (one node at a time; unset: only by "
        "`arrowport lake maintain`).",
    )
    expire_snapshots_after: str = Field(
        "7 days", description="Maintenance expires snapshots older than this (an INTERVAL)."
    )
    delete_files_after: str = Field(
        "1 day",
        description="Maintenance deletes files no snapshot needs, and orphaned files, once they "
        "are this old (an INTERVAL). Keep it longer than any query and any write takes: a "
        "younger file may still be read by a running query, and a write's file is an orphan "
        "until its commit (retries included) lands.",
    )
