"""One settings model: built-in defaults < YAML file < ``ARROWPORT_*`` environment < CLI flags.

Every scalar setting has a dotted YAML key (``api.port``) and an environment variable derived from it
(``ARROWPORT_API_PORT``); :data:`ENV_ALIASES` adds the seed spec's spellings that do not follow the
rule (``ARROWPORT_ENABLE_METRICS``). ``settings_table()`` yields (key, variable, default, help) rows,
which the README's configuration table is generated from, so code and docs cannot drift apart.

Example::

    settings = load_settings(config_file="config.yaml", overrides={"api.port": 9000})
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from arrowport.config_types import (
    EXCERPT_CHARS,
    ConfigFileError,
    check_duration,
    excerpt,
    normal_origin,
    read_yaml,
    refuse_bool,
)
from arrowport.options import (
    DuplicateKeysPolicy,
    SchemaPolicy,
    WriteMode,
    is_stream_name,
    is_table_name,
)

ENV_PREFIX = "ARROWPORT_"
ENV_CONFIG_FILE = "ARROWPORT_CONFIG"

ResultCodec = Literal["none", "zstd", "lz4"]
Scope = Literal["ingest", "read", "admin"]


class ConfigError(Exception):
    """The configuration cannot be used; the message names the key and the problem."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        return refuse_bool(cls.model_fields[str(info.field_name)].annotation, value)

    @field_validator("*")
    @classmethod
    def _bounded_durations(cls, value: Any, info: ValidationInfo) -> Any:
        return check_duration(str(info.field_name), value)


class ApiSettings(_Section):
    host: str = Field("127.0.0.1", description="Address the HTTP API binds to.")
    port: int = Field(8000, ge=0, le=65535, description="HTTP port (0 picks a free port).")
    enable_metrics: bool = Field(True, description="Serve Prometheus metrics at /metrics.")
    metrics_port: int | None = Field(
        None, ge=0, le=65535, description="Also serve metrics on this port (unset: off)."
    )
    cors_origins: list[str] = Field(
        [],
        description="Origins allowed to call the API from a browser (comma-separated in the "
        "variable; empty: no CORS headers at all).",
    )

    allowed_hosts: list[str] = Field(
        [],
        description="Host names clients may use to reach the API (comma-separated in the "
        "variable; '*.example.com' matches subdomains, '*' any). Empty: with authentication, "
        "any; without it, only loopback names and the bound address, against DNS rebinding.",
    )
    workers: int = Field(
        1,
        ge=1,
        description="Server processes sharing the HTTP and Flight ports (a lake target only; "
        "also --workers).",
    )
    header_timeout_seconds: float = Field(
        10.0, gt=0, description="Longest a client may take to send a request's headers."
    )
    max_connections: int = Field(
        1024,
        ge=1,
        description="Open HTTP connections; beyond it the one idle longest before sending its "
        "request is closed first.",
    )
    max_header_bytes: int = Field(
        64 * 1024,
        ge=1024,
        le=16 * 1024**2,
        description="Largest request head (request line and headers); a larger one gets 431 "
        "`header_too_large` and its connection is closed.",
    )

    @field_validator("cors_origins", "allowed_hosts", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        if value is None:
            return []
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("cors_origins")
    @classmethod
    def _normal_origins(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(normal_origin(origin) for origin in value if origin.strip()))


class FlightSettings(_Section):
    enabled: bool = Field(True, description="Serve Arrow Flight (gRPC) next to the HTTP API.")
    host: str | None = Field(
        None, description="Address the Flight endpoint binds to (unset: the same as api.host)."
    )
    port: int = Field(8815, ge=0, le=65535, description="Arrow Flight port (0 picks a free port).")
    upload_buffer_bytes: int = Field(
        8 * 1024**2,
        ge=0,
        description="Bytes of a put's batches held in memory ahead of DuckDB; a client that "
        "sends faster waits (gRPC's window, receive_window_bytes, holds it back).",
    )
    receive_window_bytes: int = Field(
        4 * 1024**2,
        ge=64 * 1024,
        description="gRPC flow-control window of each call: bytes a client may send ahead of "
        "the server reading them (fixed; gRPC's own bandwidth-delay estimate grew it until a "
        "2 GB put held ~100 MB more). Raise it for clients far away (window / round trip "
        "bounds a put's rate).",
    )
    max_concurrent_calls: int = Field(
        64, ge=1, description="Flight calls served at once (RESOURCE_EXHAUSTED beyond)."
    )
    spool_dir: str | None = Field(
        None,
        description="Directory for the temporary files of query answers that do not fit in "
        "memory (unset: the system's temporary directory).",
    )
    max_spooled_answer_bytes: int = Field(
        2 * 1024**3,
        ge=0,
        description="Bytes of Flight SQL answers waiting for their DoGet in spools (memory, then "
        "spool_dir), all clients together: a query in a transaction whose answer would pass it "
        "is refused (RESOURCE_EXHAUSTED result_too_large) until others are fetched or dropped "
        "(unfetched: after 60 s).",
    )
    max_transactions_per_client: int = Field(
        1024,
        ge=1,
        description="Flight SQL transactions one token (anonymous clients together) may hold "
        "open; BeginTransaction beyond is refused (RESOURCE_EXHAUSTED overloaded) until it ends "
        "one.",
    )
    max_prepared_statements_per_client: int = Field(
        256,
        ge=1,
        description="Flight SQL prepared statements one token (anonymous clients together) may "
        "hold open; preparing more is refused (RESOURCE_EXHAUSTED overloaded) until it closes "
        "one.",
    )


class DuckDBSettings(_Section):
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


class StorageSettings(_Section):
    target: Literal["duckdb", "ducklake"] = Field(
        "duckdb",
        description="Where data lands: a DuckDB file (duckdb.path; one process) or a DuckLake "
        "shared by many nodes (ducklake.*).",
    )


class DuckLakeSettings(_Section):
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


class CompressionSettings(_Section):
    algorithm: ResultCodec = Field(
        "none", description="IPC buffer compression of Arrow query results: none, zstd or lz4."
    )
    level: int | None = Field(3, description="Compression level for zstd.")


class DefaultsSettings(_Section):
    chunk_size: int = Field(
        122_880,
        ge=1,
        description="Most rows handed to DuckDB in one batch (larger batches are sliced).",
    )
    coalesce_rows: int = Field(
        122_880,
        ge=1,
        description="A request's consecutive batches are joined into batches of this many rows "
        "(at most chunk_size): DuckDB inserts in parallel only from whole row groups (122,880).",
    )


class LimitsSettings(_Section):
    max_body_bytes: int = Field(
        4 * 1024**3, ge=1, description="Largest request body, after decompression (413 above)."
    )
    max_json_body_bytes: int = Field(
        512 * 1024**2,
        ge=1,
        description="Largest JSON/base64 body (413 above); one whose config follows "
        "batch.data is held in memory whole.",
    )
    max_message_bytes: int = Field(
        256 * 1024**2,
        ge=1024,
        description="Largest Arrow IPC message (one record batch), after decompression (413 "
        "above: send smaller batches); a request's memory is about two of them.",
    )
    max_columns: int = Field(
        10_000, ge=1, description="Most columns in an uploaded schema, nested fields included."
    )
    max_rows_per_request: int | None = Field(
        None, ge=1, description="Most rows one request may carry (413 above; unset: no limit)."
    )
    small_body_bytes: int = Field(
        1024**2,
        ge=0,
        description="Bodies up to this size are buffered and group-committed; larger ones stream.",
    )
    max_streaming_writes: int = Field(
        8, ge=1, description="Concurrent large (streaming) writes; more are refused with 503."
    )
    max_streaming_writes_per_client: int = Field(
        4,
        ge=1,
        description="Concurrent streaming writes of one token; more get 503.",
    )
    max_queued_writes: int = Field(
        4096, ge=1, description="Small writes waiting for the group writer; more get 503."
    )
    max_inflight_bytes: int = Field(
        1024**3,
        ge=1,
        description="Request bodies held in memory at once (buffered small and JSON bodies, small "
        "Flight puts; a streamed body counts its 16 MiB buffer, a large put its "
        "flight.upload_buffer_bytes and two of its messages); more get 503 (Flight: "
        "UNAVAILABLE).",
    )
    body_timeout_seconds: float = Field(
        60.0,
        gt=0,
        description="Longest wait for the next piece of a request body, Flight put or "
        "Handshake (408, DEADLINE_EXCEEDED over Flight, after).",
    )
    min_body_bytes_per_second: int = Field(
        1024,
        ge=0,
        description="Slowest a body may arrive, averaged over each body_timeout_seconds (408 "
        "below; 0: no minimum).",
    )
    query_timeout_seconds: float | None = Field(
        300.0,
        gt=0,
        description="Longest a query may run, its answer's rendering included, before it is "
        "interrupted (408).",
    )
    max_query_body_bytes: int = Field(
        1024**2,
        ge=1,
        description="Largest /query request body (413 above), Flight ticket or descriptor "
        "command, and Flight SQL query text or bound parameter batch (RESOURCE_EXHAUSTED "
        "`payload_too_large` above).",
    )
    max_result_bytes: int = Field(
        1024**3,
        ge=1,
        description="Largest query answer in any format (413 result_too_large above).",
    )
    max_concurrent_queries: int = Field(
        4, ge=1, description="Queries run at once; more wait (see max_queued_queries)."
    )
    max_queued_queries: int = Field(32, ge=0, description="Queries waiting to run; more get 503.")
    shutdown_timeout_seconds: float = Field(
        30.0,
        gt=0,
        description="On SIGTERM, how long in-flight requests (HTTP and Flight alike) may take "
        "to finish.",
    )


class GroupCommitSettings(_Section):
    max_requests: int = Field(
        256, ge=1, description="Most small requests merged into one transaction."
    )
    max_rows: int = Field(
        500_000, ge=1, description="Most rows merged into one group-commit transaction."
    )
    max_bytes: int = Field(
        64 * 1024**2,
        ge=1,
        description="Most decoded bytes merged into one group-commit transaction.",
    )
    max_wait_ms: float = Field(
        0.0,
        ge=0,
        le=60_000,
        description="How long the writer waits for more requests before committing a group "
        "(at most 60000).",
    )


class DeliverySettings(_Section):
    idempotency_window_hours: float = Field(
        24.0, gt=0, description="How long idempotency keys are remembered."
    )


class LoggingSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")
    format: Literal["auto", "json", "console"] = Field(
        "auto", description="Log format; auto is JSON unless stderr is a terminal."
    )


class StreamSettings(_Section):
    """A configured stream (YAML ``streams:`` only)."""

    table: str | None = Field(
        None, description="Target table, `schema.table` outside main (default: the stream's name)."
    )
    mode: WriteMode = "append"
    chunk_size: int | None = Field(None, ge=1)
    compression: ResultCodec | None = Field(
        None, description="Accepted for the seed's layout; senders choose their own compression."
    )
    key_columns: list[str] | None = Field(None, description="Key columns for mode upsert.")
    schema_policy: SchemaPolicy = "strict"
    duplicate_keys: DuplicateKeysPolicy = Field(
        "error", description="Upsert batches with a repeated key: 409, or the last row wins."
    )
    locked: bool = Field(
        False,
        description="Refuse (403) request options that differ from this configuration "
        "(table, mode, key columns, schema policy, duplicate keys).",
    )

    @field_validator("table")
    @classmethod
    def _table_name(cls, value: str | None) -> str | None:
        if value is not None and not is_table_name(value):
            raise ValueError(f"invalid table name {value!r}")
        return value


_TOKEN_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_SECRET_HASH_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


class TokenSettings(_Section):
    """An API token (``auth.tokens``): the secret itself is never stored, only its hash."""

    name: str
    secret_hash: str
    scopes: list[Scope] = Field(default_factory=list)
    streams: list[str] | None = None

    @field_validator("name")
    @classmethod
    def _token_name(cls, value: str) -> str:
        if not _TOKEN_NAME_RE.fullmatch(value):
            raise ValueError("use letters, digits, '_', '-' or '.' (at most 64)")
        return value

    @field_validator("secret_hash")
    @classmethod
    def _secret_hash(cls, value: str) -> str:
        if not _SECRET_HASH_RE.fullmatch(value):
            raise ValueError(
                "expected 'sha256:' and 64 hex digits, as printed by `arrowport token create`"
                " (put the hash here, never the secret)"
            )
        return value

    @field_validator("streams")
    @classmethod
    def _stream_names(cls, value: list[str] | None) -> list[str] | None:
        for name in value or ():
            if not is_stream_name(name):
                raise ValueError(f"invalid stream name {name!r}")
        return value


class AuthSettings(_Section):
    tokens: list[TokenSettings] = Field(
        [],
        description="API tokens (YAML list; the variable holds the same list as JSON). None "
        "configured: no authentication, and only a loopback address may be bound.",
    )
    allow_unauthenticated: bool = Field(
        False,
        description="Bind a non-loopback address with no tokens configured: anyone who can "
        "connect may read and write everything (also --allow-unauthenticated).",
    )
    public_metrics: bool = Field(
        False, description="With tokens configured, serve /metrics without a token."
    )
    public_docs: bool = Field(
        False, description="With tokens configured, serve /docs and /openapi.json without a token."
    )

    @field_validator("tokens", mode="before")
    @classmethod
    def _tokens_from_json(cls, value: Any) -> Any:
        if value is None:
            return []
        if isinstance(value, str):
            try:
                return json.loads(value)
            except json.JSONDecodeError:
                raise ValueError("expected a JSON list of tokens") from None
        return value

    @field_validator("tokens")
    @classmethod
    def _unique_tokens(cls, value: list[TokenSettings]) -> list[TokenSettings]:
        names = [token.name for token in value]
        hashes = [token.secret_hash for token in value]
        if len(set(names)) != len(names):
            raise ValueError("two tokens have the same name")
        if len(set(hashes)) != len(hashes):
            raise ValueError("two tokens have the same secret")
        return value


class TlsSettings(_Section):
    cert_file: str | None = Field(
        None,
        description="PEM certificate (chain) for HTTPS and grpc+tls (unset: plain TCP).",
    )
    key_file: str | None = Field(None, description="PEM private key of tls.cert_file.")

    @model_validator(mode="after")
    def _both_or_neither(self) -> TlsSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("set both tls.cert_file and tls.key_file, or neither")
        return self

    @property
    def enabled(self) -> bool:
        return self.cert_file is not None


class Settings(_Section):
    api: ApiSettings = ApiSettings()
    duckdb: DuckDBSettings = DuckDBSettings()
    storage: StorageSettings = StorageSettings()
    ducklake: DuckLakeSettings = DuckLakeSettings()
    compression: CompressionSettings = CompressionSettings()
    defaults: DefaultsSettings = DefaultsSettings()
    limits: LimitsSettings = LimitsSettings()
    group_commit: GroupCommitSettings = GroupCommitSettings()
    delivery: DeliverySettings = DeliverySettings()
    flight: FlightSettings = FlightSettings()
    logging: LoggingSettings = LoggingSettings()
    auth: AuthSettings = AuthSettings()
    tls: TlsSettings = TlsSettings()
    streams: dict[str, StreamSettings] = Field(default_factory=dict)
    streams_only: bool = Field(
        False, description="Refuse (404) stream names that are not configured under streams:."
    )

    @model_validator(mode="after")
    def _lake_is_located(self) -> Settings:
        if self.storage.target == "ducklake":
            for key in ("catalog", "data_path"):
                if getattr(self.ducklake, key) is None:
                    raise ValueError(f"storage.target ducklake needs ducklake.{key}")
        return self

    @field_validator("streams")
    @classmethod
    def _stream_names(cls, value: dict[str, StreamSettings]) -> dict[str, StreamSettings]:
        for name in value:
            if not is_stream_name(name):
                raise ValueError(f"invalid stream name {name!r}")
        return value


# Seed-spec variable names that do not follow ARROWPORT_<SECTION>_<KEY>.
ENV_ALIASES: dict[str, str] = {"ARROWPORT_ENABLE_METRICS": "api.enable_metrics"}
_SCALAR_SECTIONS = (
    "api",
    "duckdb",
    "storage",
    "ducklake",
    "compression",
    "defaults",
    "limits",
    "group_commit",
    "delivery",
    "flight",
    "logging",
    "auth",
    "tls",
)
_TOP_LEVEL_SCALARS = ("streams_only",)


def env_name(key: str) -> str:
    """``api.port`` -> ``ARROWPORT_API_PORT``."""
    return ENV_PREFIX + key.replace(".", "_").upper()


def _scalar_fields() -> Iterator[tuple[str, Any]]:
    for section in _SCALAR_SECTIONS:
        model = Settings.model_fields[section].annotation
        assert isinstance(model, type)
        assert issubclass(model, BaseModel)
        for name, field in model.model_fields.items():
            yield f"{section}.{name}", field
    for name in _TOP_LEVEL_SCALARS:
        yield name, Settings.model_fields[name]


def settings_table() -> list[tuple[str, str, str, str]]:
    """Rows of (YAML key, environment variable, default, description) for every scalar setting."""
    aliases = {key: var for var, key in ENV_ALIASES.items()}
    rows = []
    for key, field in _scalar_fields():
        variable = env_name(key)
        if key in aliases:
            variable = f"{aliases[key]} (or {variable})"
        default = "unset" if field.default is None else repr(field.default)
        rows.append((key, variable, default, field.description or ""))
    return rows


def _set_dotted(target: dict[str, Any], key: str, value: Any) -> None:
    node = target
    *parents, last = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def _deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _env_layer(environ: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    layer: dict[str, Any] = {}
    origin: dict[str, str] = {}
    by_variable = {env_name(key): key for key, _ in _scalar_fields()} | ENV_ALIASES
    for variable, key in by_variable.items():
        if variable in environ:
            raw = environ[variable]
            _set_dotted(layer, key, None if raw == "" else raw)
            origin[key] = variable
    return layer, origin


def _yaml_layer(path: Path) -> dict[str, Any]:
    try:
        data = read_yaml(path)
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot read it ({exc.strerror})") from exc
    except ConfigFileError as exc:
        raise ConfigError(f"config file {path}{exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping of sections at the top level")
    # A section whose keys are all commented out reads as null: treat it as empty.
    return {key: {} if value is None else value for key, value in data.items()}


def _explain(exc: ValidationError, origin: Mapping[str, str], source: str) -> str:
    error = exc.errors()[0]
    key = ".".join(str(part)[:EXCERPT_CHARS] for part in error["loc"]) or "(top level)"
    parents = [key.rsplit(".", n)[0] for n in range(key.count(".") + 1)]
    where = next((origin[k] for k in parents if k in origin), source)
    message = error["msg"]
    if error["type"] == "extra_forbidden":
        message = "unknown key"
    value = error.get("input")
    # Never echoed: what might be a secret; otherwise at most a short excerpt.
    secret = "secret" in key or "password" in key or key.startswith("auth.tokens")
    hidden = secret or error["type"] == "extra_forbidden" or isinstance(value, dict)
    shown = "" if hidden else f" {excerpt(value)}"
    return f"invalid configuration: {key}:{shown} {message} (from {where})"


def load_settings(
    config_file: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Layer defaults < YAML < environment < ``overrides`` (dotted keys, e.g. from CLI flags).

    Raises :class:`ConfigError` with a one-line message naming the offending key.
    """
    environ = os.environ if environ is None else environ
    if config_file is None and environ.get(ENV_CONFIG_FILE):
        config_file = environ[ENV_CONFIG_FILE]
    merged: dict[str, Any] = {}
    source = "defaults"
    if config_file is not None:
        merged = _yaml_layer(Path(config_file))
        source = f"config file {config_file}"
    env_layer, origin = _env_layer(environ)
    merged = _deep_merge(merged, env_layer)
    flag_layer: dict[str, Any] = {}
    for key, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(flag_layer, key, value)
            origin[key] = "command line"
    merged = _deep_merge(merged, flag_layer)
    try:
        return Settings.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, origin, source)) from None
