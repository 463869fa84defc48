"""Request and response bodies of the HTTP API (they also document it at ``/docs``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from arrowport.options import TABLE_NAME_PATTERN


class CompressionSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    algorithm: Literal["zstd", "lz4", "gzip", "none"] | None = Field(
        None, description="Codec the sender compressed `batch.data` with, if any."
    )
    level: int | None = Field(None, description="Accepted for compatibility; not needed to decode.")


class StreamConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    target_table: str | None = Field(
        None,
        description="Table to land in (default: stream's).",
        json_schema_extra={"pattern": f"^{TABLE_NAME_PATTERN}$"},
    )
    chunk_size: int | None = Field(None, ge=1, description="Rows handed to DuckDB at a time.")
    compression: CompressionSpec | None = None
    mode: Literal["append", "replace", "create", "upsert"] | None = None
    key_columns: list[str] | None = Field(None, description="Key columns for mode upsert.")
    schema_policy: Literal["strict", "evolve"] | None = None
    duplicate_keys: Literal["error", "last_wins"] | None = None
    dry_run: bool = Field(False, description="Validate and report; write nothing.")


class BatchPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    arrow_schema: str | None = Field(None, description="Base64 of the serialized Arrow schema.")
    data: str = Field(description="Base64 of an Arrow IPC stream (optionally zstd/lz4 framed).")


class StreamRequest(BaseModel):
    """The seed format: a base64 Arrow IPC stream inside JSON."""

    model_config = ConfigDict(extra="forbid")
    config: StreamConfig = StreamConfig()
    batch: BatchPayload


class IngestResponse(BaseModel):
    status: Literal["success"]
    stream: str
    rows_processed: int
    message: str
    table: str
    batches: int
    bytes: int
    duration_ms: float
    table_created: bool
    duplicate: bool = False
    producer_id: str | None = None
    sequence: int | None = None
    dry_run: bool = False
    actions: list[str] | None = None


class ErrorResponse(BaseModel):
    status: Literal["error"]
    stream: str | None = None
    message: str
    code: str


class QueryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sql: str = Field(description="One read-only SELECT statement; `?` or `$1` placeholders.")
    params: list[Any] | None = Field(
        None,
        description="Values for the placeholders: at most 32 levels of nested lists and objects, "
        "100,000 values in all (422 `invalid_value` otherwise).",
    )


class ResultColumn(BaseModel):
    name: str
    type: str = Field(description="The Arrow type.")


class QueryAnswer(BaseModel):
    """A query's answer as JSON (``Accept: application/json``)."""

    columns: list[ResultColumn]
    rows: list[dict[str, Any]]
    row_count: int


class ColumnInfo(BaseModel):
    name: str
    type: str
    nullable: bool


class TableResponse(BaseModel):
    name: str
    columns: list[ColumnInfo]
    row_count: int


class StreamInfo(BaseModel):
    name: str
    table: str | None = Field(description="null: a request must name its table.")
    mode: str
    chunk_size: int
    compression: str | None
    key_columns: list[str]
    schema_policy: str
    duplicate_keys: str
    locked: bool = Field(description="Requests may not set options that differ from these.")
    configured: bool = Field(description="false: the defaults of a stream not configured.")


class ProducerResponse(BaseModel):
    stream: str
    producer_id: str
    last_sequence: int | None = Field(description="Last committed sequence; null if none yet.")
    next_sequence: int | None = Field(description="The sequence to send next; null: any.")
