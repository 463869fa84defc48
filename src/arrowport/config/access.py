"""Who may connect: API tokens (stored as hashes of their secrets) and authentication."""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import Field, ValidationInfo, field_validator

from arrowport.config.base import Scope, Section
from arrowport.options import is_stream_name

_TOKEN_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_SECRET_HASH_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


class TokenSettings(Section):
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
    def _stream_names(cls, value: list[str] | None, info: ValidationInfo) -> list[str] | None:
        for name in value or ():
            if not is_stream_name(name):
                raise ValueError(f"invalid stream name {name!r}")
        scopes = info.data.get("scopes", [])
        if value is not None and ("admin" in scopes or "ingest" not in scopes):
            # The limit applies to ingest alone, and admin may do everything: such a limit
            # would be read as one and hold nothing back.
            raise ValueError(
                "limits ingest, so it needs the ingest scope and no admin scope "
                f"(this token's scopes: {', '.join(scopes) or 'none'})"
            )
        return value


class AuthSettings(Section):
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
