"""The root ``Settings`` model, the environment variable of each scalar setting and the table
of them all that the README's configuration table is generated from."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, Field, field_validator, model_validator

from arrowport.config.access import AuthSettings
from arrowport.config.base import Section
from arrowport.config.data import (
    CompressionSettings,
    DefaultsSettings,
    DeliverySettings,
    GroupCommitSettings,
    LimitsSettings,
    StreamSettings,
)
from arrowport.config.serving import ApiSettings, FlightSettings, LoggingSettings, TlsSettings
from arrowport.config.storage import DuckDBSettings, DuckLakeSettings, StorageSettings
from arrowport.options import is_stream_name

ENV_PREFIX = "ARROWPORT_"


class Settings(Section):
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


def scalar_fields() -> Iterator[tuple[str, Any]]:
    """(dotted key, pydantic field) of every scalar setting, in the table's order."""
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
    for key, field in scalar_fields():
        variable = env_name(key)
        if key in aliases:
            variable = f"{aliases[key]} (or {variable})"
        default = "unset" if field.default is None else repr(field.default)
        rows.append((key, variable, default, field.description or ""))
    return rows
