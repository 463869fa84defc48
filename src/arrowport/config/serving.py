"""The sections of serving: the HTTP API, Arrow Flight, TLS and logging."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from arrowport.config.base import Section
from arrowport.config.checks import normal_origin


class ApiSettings(Section):
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


class FlightSettings(Section):
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
        64,
        ge=1,
        description="Flight calls served at once; more are refused (UNAVAILABLE overloaded).",
    )
    max_concurrent_calls_per_client: int = Field(
        32,
        ge=1,
        description="Flight calls one token may have at once, of max_concurrent_calls; more "
        "are refused (RESOURCE_EXHAUSTED overloaded). Callers without a token (no tokens "
        "configured) count only toward max_concurrent_calls.",
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


class TlsSettings(Section):
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


class LoggingSettings(Section):
    level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")
    format: Literal["auto", "json", "console"] = Field(
        "auto", description="Log format; auto is JSON unless stderr is a terminal."
    )
