"""What the server's listings answer, as typed values."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ColumnInfo:
    """One column of a table: its DuckDB type and whether it may hold NULL."""

    name: str
    type: str
    nullable: bool


@dataclass(frozen=True)
class TableInfo:
    """A table of the database (``GET /tables/{name}``)."""

    name: str
    columns: tuple[ColumnInfo, ...]
    row_count: int

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> TableInfo:
        return cls(
            name=body["name"],
            columns=tuple(
                ColumnInfo(name=c["name"], type=c["type"], nullable=c["nullable"])
                for c in body["columns"]
            ),
            row_count=body["row_count"],
        )


@dataclass(frozen=True)
class StreamInfo:
    """A stream as the server writes it (``GET /streams``, ``GET /streams/{name}``): what a
    request that sets no option of its own gets. ``table`` is None when a request must name
    its table; ``locked``: a request may not set options that differ; ``configured``: False
    for a stream the configuration does not name (it gets the defaults)."""

    name: str
    table: str | None
    mode: str
    chunk_size: int
    compression: str | None = None
    key_columns: tuple[str, ...] = ()
    schema_policy: str = "strict"
    duplicate_keys: str = "error"
    locked: bool = False
    configured: bool = True

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> StreamInfo:
        return cls(
            name=body["name"],
            table=body.get("table"),
            mode=body["mode"],
            chunk_size=body["chunk_size"],
            compression=body.get("compression"),
            key_columns=tuple(body.get("key_columns") or ()),
            schema_policy=body.get("schema_policy", "strict"),
            duplicate_keys=body.get("duplicate_keys", "error"),
            locked=bool(body.get("locked", False)),
            configured=bool(body.get("configured", True)),
        )


@dataclass(frozen=True)
class ProducerOffset:
    """Where a producer stands on a stream: the last sequence committed (``None``: none yet)
    and the one to send next (``None``: any)."""

    stream: str
    producer_id: str
    last_sequence: int | None
    next_sequence: int | None

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> ProducerOffset:
        return cls(
            stream=body["stream"],
            producer_id=body["producer_id"],
            last_sequence=body.get("last_sequence"),
            next_sequence=body.get("next_sequence"),
        )
