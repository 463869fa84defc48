"""What every settings section shares: the ``Section`` base model, ``ConfigError`` and the
literal types more than one section uses."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

from arrowport.config.checks import check_duration, refuse_bool

ResultCodec = Literal["none", "zstd", "lz4"]
Scope = Literal["ingest", "read", "admin"]


class ConfigError(Exception):
    """The configuration cannot be used; the message names the key and the problem."""


# The base of every section: unknown keys are refused, assignments are validated, a bool is no
# number and a duration is bounded.
class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        return refuse_bool(cls.model_fields[str(info.field_name)].annotation, value)

    @field_validator("*")
    @classmethod
    def _bounded_durations(cls, value: Any, info: ValidationInfo) -> Any:
        return check_duration(str(info.field_name), value)
