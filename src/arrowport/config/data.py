"""How data moves: result compression, batch sizes, limits, group commit, delivery and the
configured streams."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from arrowport.config.base import ResultCodec, Section
from arrowport.options import DuplicateKeysPolicy, SchemaPolicy, WriteMode, is_table_name


class CompressionSettings(Section):
    algorithm: ResultCodec = Field(
        "none", description="IPC buffer compression of Arrow query results: none, zstd or lz4."
    )
    level: int | None = Field(3, description="Compression level for zstd.")


class DefaultsSettings(Section):
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


class LimitsSettings(Section):
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
        description="Slowest a body, Flight put or Handshake may arrive, averaged over each "
        "body_timeout_seconds (408, DEADLINE_EXCEEDED over Flight, below; 0: no minimum).",
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
    max_server_memory_bytes: int | None = Field(
        None,
        ge=0,
        description="Resident memory of the server process past which the queries running are "
        "stopped (503 out_of_memory); unset: 80% of the memory the process may use (the "
        "machine's, or its cgroup's limit), shared among api.workers, and at least 512 MiB "
        "above duckdb.memory_limit; 0: never.",
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


class GroupCommitSettings(Section):
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


class DeliverySettings(Section):
    idempotency_window_hours: float = Field(
        24.0, gt=0, description="How long idempotency keys are remembered."
    )


class StreamSettings(Section):
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

    @model_validator(mode="after")
    def _upsert_options_can_apply(self) -> StreamSettings:
        # Beside another mode they are the keys a request asking for upsert gets; a locked
        # stream's requests cannot ask, so there they would never apply.
        given = [
            name for name in ("key_columns", "duplicate_keys") if name in self.model_fields_set
        ]
        if self.locked and self.mode != "upsert" and given:
            raise ValueError(
                f"{' and '.join(given)} apply to mode upsert only, and this stream is locked "
                f"to mode {self.mode}"
            )
        return self
