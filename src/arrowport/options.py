"""The ingest contract every protocol shares: request options, name rules and the reply.

HTTP (query parameters and headers, or the seed's JSON ``config``), Flight (a JSON command),
Flight SQL (``CommandStatementIngest.options``) and the Python client all fill one
:class:`IngestRequest` and read one :class:`IngestReply`, so an option means the same everywhere
and is checked in one place. Standard library only: the client imports this without the server.

Example::

    request = IngestRequest("events", table="events_raw", idempotency_key="batch-0001")
    request.query_params()   # {'table': 'events_raw'}
    request.headers()        # {'Idempotency-Key': 'batch-0001'}
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, get_args

from arrowport.errors import SHOWN_CHARS, InvalidName, InvalidOptions, shown

WriteMode = Literal["append", "replace", "create", "upsert"]
SchemaPolicy = Literal["strict", "evolve"]
DuplicateKeysPolicy = Literal["error", "last_wins"]
WRITE_MODES: tuple[str, ...] = get_args(WriteMode)
SCHEMA_POLICIES: tuple[str, ...] = get_args(SchemaPolicy)
DUPLICATE_KEYS_POLICIES: tuple[str, ...] = get_args(DuplicateKeysPolicy)

# A table is a plain identifier, optionally after a schema's (``analytics.events``; every name
# is quoted in SQL all the same). A stream labels metrics and delivery records: letters, digits,
# '_', '.', '-'; a stream whose name is no table name must name its table.
IDENTIFIER_PATTERN = r"[A-Za-z_][A-Za-z0-9_]{0,62}"
TABLE_NAME_PATTERN = rf"(?:{IDENTIFIER_PATTERN}\.)?{IDENTIFIER_PATTERN}"
STREAM_NAME_PATTERN = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_TABLE_RE = re.compile(TABLE_NAME_PATTERN)
# Schemas a table may not be written to: DuckDB's own, Arrowport's internal one, and the names
# DuckDB gives catalogs (a schema named like a catalog makes every reference to it ambiguous);
# so are names starting with "__" (DuckLake's metadata catalog is __ducklake_metadata_<name>).
RESERVED_SCHEMAS = frozenset(
    {"_arrowport", "information_schema", "pg_catalog", "system", "temp", "memory", "lake"}
)
DEFAULT_SCHEMA = "main"
_STREAM_RE = re.compile(STREAM_NAME_PATTERN)
MAX_KEY_LENGTH = 256
# Sequences are stored as BIGINT, and the one after the last must be one too.
MAX_SEQUENCE = 2**63 - 2


def is_table_name(name: str) -> bool:
    """True for ``table`` or ``schema.table`` (a schema that is not reserved)."""
    if _TABLE_RE.fullmatch(name) is None:
        return False
    schema, _, _ = name.rpartition(".")
    return schema.lower() not in RESERVED_SCHEMAS and not schema.startswith("__")


def canonical_table(name: str) -> str:
    """``name`` without a ``main.`` prefix: the default schema's tables go by their own name."""
    schema, _, table = name.rpartition(".")
    return table if schema.lower() == DEFAULT_SCHEMA else name


def is_stream_name(name: str) -> bool:
    return _STREAM_RE.fullmatch(name) is not None


def check_table_name(name: str) -> str:
    """``name`` if it is a plain identifier (letters, digits, underscores; at most 63)."""
    schema, _, _ = name.rpartition(".")
    if _TABLE_RE.fullmatch(name) is not None and not is_table_name(name):
        raise InvalidName(
            f"invalid table name {shown(name)}: the schema {shown(schema)} is reserved (so are "
            + ", ".join(sorted(RESERVED_SCHEMAS))
            + " and names starting with __): write to another schema, or to none (main)",
            table=name[:SHOWN_CHARS],
        )
    if not is_table_name(name):
        raise InvalidName(
            f"invalid table name {shown(name)}: use letters, digits and underscores, "
            "starting with a letter or underscore, at most 63 characters, optionally after a "
            "schema's name and a dot (schema.table; not "
            + ", ".join(sorted(RESERVED_SCHEMAS))
            + " or a name starting with __)",
            table=name[:SHOWN_CHARS],
        )
    return name


def check_key(label: str, value: str) -> str:
    """``value``, an idempotency key or producer id (``label``): 1 to :data:`MAX_KEY_LENGTH`
    characters of valid Unicode (a lone surrogate, which JSON can escape, cannot be stored)."""
    if not 0 < len(value) <= MAX_KEY_LENGTH:
        raise InvalidOptions(f"{label} must be 1 to {MAX_KEY_LENGTH} characters", field=label)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidOptions(
            f"{label} is not valid Unicode (it holds a lone surrogate)", field=label
        ) from None
    return value


def check_stream_name(name: str) -> str:
    if not is_stream_name(name):
        raise InvalidName(
            f"invalid stream name {name!r}: use letters, digits, '_', '.' and '-', "
            "at most 128 characters",
            stream=name,
        )
    return name


def _choice(name: str, value: str | None, allowed: tuple[str, ...]) -> None:
    if value is not None and value not in allowed:
        raise InvalidOptions(
            f"invalid {name} {value!r}: use one of {', '.join(allowed)}", field=name
        )


@dataclass(frozen=True)
class IngestRequest:
    """What a client asks of one ingest; ``None`` means "the stream's configuration decides".

    Checked when built: every adapter gets the same 4xx for the same bad option.
    """

    stream: str
    table: str | None = None
    mode: WriteMode | None = None
    chunk_size: int | None = None
    key_columns: tuple[str, ...] | None = None
    schema_policy: SchemaPolicy | None = None
    duplicate_keys: DuplicateKeysPolicy | None = None
    dry_run: bool = False
    idempotency_key: str | None = None
    producer_id: str | None = None
    sequence: int | None = None

    def __post_init__(self) -> None:
        check_stream_name(self.stream)
        if self.table is not None:
            check_table_name(self.table)
        _choice("mode", self.mode, WRITE_MODES)
        _choice("schema_policy", self.schema_policy, SCHEMA_POLICIES)
        _choice("duplicate_keys", self.duplicate_keys, DUPLICATE_KEYS_POLICIES)
        if self.chunk_size is not None and self.chunk_size < 1:
            raise InvalidOptions("chunk_size must be a positive number of rows", field="chunk_size")
        if self.key_columns is not None and not all(self.key_columns):
            raise InvalidOptions("key_columns must name columns", field="key_columns")
        for label, value in (
            ("idempotency_key", self.idempotency_key),
            ("producer_id", self.producer_id),
        ):
            if value is not None:
                check_key(label, value)
        if (self.producer_id is None) != (self.sequence is None):
            raise InvalidOptions(
                "producer_id and sequence go together: send both or neither", field="sequence"
            )
        if self.sequence is not None and not 0 <= self.sequence <= MAX_SEQUENCE:
            raise InvalidOptions(
                f"sequence must be an integer from 0 to {MAX_SEQUENCE}", field="sequence"
            )

    @property
    def delivery(self) -> bool:
        """Whether exactly-once bookkeeping is asked for."""
        return self.idempotency_key is not None or self.producer_id is not None

    # -- from text (HTTP query parameters and headers, Flight SQL options) ---------------------

    @classmethod
    def from_text(cls, stream: str, get: Callable[[str], str | None]) -> IngestRequest:
        """Options as text, looked up by name with ``get`` (``None``: not given).

        Names are the field names; ``key_columns`` is comma-separated; ``dry_run`` is
        true/false/1/0/yes/no; numbers are decimal digits, optionally after ``-``.
        """
        values: dict[str, Any] = {}
        for name in TEXT_OPTIONS:
            raw = get(name)
            if raw is not None and not (raw == "" and name in _EMPTY_IS_UNSET):
                values[name] = _parse_text(name, raw)
        return cls(stream, **values)

    # -- from JSON (the Flight put command, the seed's JSON config) ------------------------------

    @classmethod
    def from_json(cls, stream: str, document: Mapping[str, Any], what: str) -> IngestRequest:
        """Options from a JSON object; ``what`` names it in errors. Unknown keys are refused."""
        unknown = sorted(set(document) - set(_JSON_TYPES))
        if unknown:
            raise InvalidOptions(
                f"{what}: unknown keys {', '.join(unknown)}; use {', '.join(_JSON_TYPES)}",
                field=unknown[0],
            )
        values: dict[str, Any] = {}
        for name, value in document.items():
            if checked_json(name, value, _JSON_TYPES[name], what) is not None:
                values[name] = tuple(value) if isinstance(value, list) else value
        return cls(stream, **values)

    # -- encodings, for clients ------------------------------------------------------------------

    def options(self) -> dict[str, Any]:
        """The options given (not ``None``), by field name, stream excluded."""
        return {
            name: value
            for name, value in asdict(self).items()
            if name != "stream" and value is not None and not (name == "dry_run" and not value)
        }

    def query_params(self) -> dict[str, str]:
        """Everything but the idempotency key, as HTTP query parameters."""
        return {
            name: _to_text(value)
            for name, value in self.options().items()
            if name != "idempotency_key"
        }

    def headers(self) -> dict[str, str]:
        if self.idempotency_key is None:
            return {}
        return {"Idempotency-Key": self.idempotency_key}

    def json_command(self) -> dict[str, Any]:
        """The Flight put command (``{"stream_name": …, …}``)."""
        body: dict[str, Any] = {"stream_name": self.stream}
        for name, value in self.options().items():
            body[name] = list(value) if isinstance(value, tuple) else value
        return body


_JSON_TYPES: dict[str, type] = {
    "table": str,
    "mode": str,
    "chunk_size": int,
    "key_columns": list,
    "schema_policy": str,
    "duplicate_keys": str,
    "dry_run": bool,
    "idempotency_key": str,
    "producer_id": str,
    "sequence": int,
}
TEXT_OPTIONS = tuple(f.name for f in fields(IngestRequest) if f.name != "stream")
# An empty option means "the stream's configuration decides", as if it were not sent (Flight
# SQL options; HTTP refuses empty query parameters and headers).
_EMPTY_IS_UNSET = ("table", "mode", "key_columns", "schema_policy", "duplicate_keys")
_KIND_NAMES = {int: "an integer", str: "a string", bool: "true or false", list: "a list of strings"}
# An integer as text: decimal digits, optionally after "-" (the range checks then say why not);
# no sign "+", spaces or "_" (Python's int() takes them all).
_INTEGER_TEXT = re.compile(r"-?[0-9]+")
_MAX_INTEGER_TEXT = 24
_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no")


def checked_json(name: str, value: Any, kind: type, what: str) -> Any:
    """``value`` (of the JSON object ``what``) if it has the type ``kind``; ``None`` passes."""
    if value is None:
        return None
    # bool is an int in Python; a JSON true is not a row count.
    wrong = not isinstance(value, kind) or (kind is int and isinstance(value, bool))
    if kind is list and not wrong:
        wrong = not all(isinstance(item, str) for item in value)
    if wrong:
        raise InvalidOptions(f"{what}: {name} must be {_KIND_NAMES[kind]}", field=name)
    return value


def _parse_text(name: str, raw: str) -> Any:
    kind = _JSON_TYPES[name]
    if kind is int:
        if _INTEGER_TEXT.fullmatch(raw) is None:
            raise InvalidOptions(
                f"{name} must be an integer in decimal digits, not {shown(raw)}", field=name
            )
        if len(raw) > _MAX_INTEGER_TEXT:
            raise InvalidOptions(f"{name} {shown(raw)} is out of range", field=name)
        return int(raw)
    if kind is bool:
        if raw.lower() not in _TRUE + _FALSE:
            raise InvalidOptions(f"{name} must be true or false, not {raw!r}", field=name)
        return raw.lower() in _TRUE
    if kind is list:
        return tuple(part.strip() for part in raw.split(",")) if raw else None
    return raw


def _to_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(value)
    return str(value)


@dataclass(frozen=True)
class IngestReply:
    """The answer to a committed (or duplicate, or dry-run) ingest, after its commit.

    ``status``, ``stream``, ``rows_processed`` and ``message`` are the seed's fields, first.
    """

    stream: str
    rows_processed: int
    table: str
    batches: int
    bytes: int
    duration_ms: float
    table_created: bool
    duplicate: bool = False
    producer_id: str | None = None
    sequence: int | None = None
    dry_run: bool = False
    actions: tuple[str, ...] | None = None

    @property
    def message(self) -> str:
        if self.dry_run:
            return "Dry run: nothing was written"
        if self.duplicate:
            return "Already committed; nothing written"
        return "Data processed successfully"

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "status": "success",
            "stream": self.stream,
            "rows_processed": self.rows_processed,
            "message": self.message,
            "table": self.table,
            "batches": self.batches,
            "bytes": self.bytes,
            "duration_ms": self.duration_ms,
            "table_created": self.table_created,
            "duplicate": self.duplicate,
        }
        if self.producer_id is not None:
            body |= {"producer_id": self.producer_id, "sequence": self.sequence}
        if self.dry_run:
            body |= {"dry_run": True, "actions": list(self.actions or ())}
        return body

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> IngestReply:
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in body.items() if k in names}
        if values.get("actions") is not None:
            values["actions"] = tuple(values["actions"])
        return cls(**values)
