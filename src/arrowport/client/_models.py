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
    """A stream configured on the server (``GET /streams``)."""

    name: str
    table: str
    mode: str
    chunk_size: int
    compression: str | None = None

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> StreamInfo:
        return cls(
            name=body["name"],
            table=body["table"],
            mode=body["mode"],
            chunk_size=body["chunk_size"],
            compression=body.get("compression"),
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
