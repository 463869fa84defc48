"""``POST /stream/{stream_name}``: the seed's JSON/base64 body and the raw Arrow IPC fast path."""

from __future__ import annotations

import urllib.parse
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse, Response

from arrowport.api.json_body import ingest_json
from arrowport.api.models import IngestResponse
from arrowport.api.openapi import error_responses
from arrowport.api.security import client_id, require_ingest, services
from arrowport.auth import Principal
from arrowport.errors import (
    InvalidOptions,
    PayloadTooLarge,
    UnsupportedMediaType,
    shown,
)
from arrowport.ingest.bodies import BytesBody
from arrowport.ingest.payload import content_encoding_codec
from arrowport.ingest.pipe import read_body
from arrowport.ingest.service import IngestService
from arrowport.options import (
    DUPLICATE_KEYS_POLICIES,
    MAX_KEY_LENGTH,
    SCHEMA_POLICIES,
    STREAM_NAME_PATTERN,
    TABLE_NAME_PATTERN,
    TEXT_OPTIONS,
    WRITE_MODES,
    IngestReply,
    IngestRequest,
)

ARROW_STREAM = "application/vnd.apache.arrow.stream"
JSON = "application/json"

router = APIRouter()

_ERRORS = error_responses(400, 401, 404, 408, 409, 413, 415, 422, 503, 507)

_OPENAPI_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            JSON: {"schema": {"$ref": "#/components/schemas/StreamRequest"}},
            ARROW_STREAM: {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


def media_type_of(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


# Header spellings of the options (query parameters carry them by their own names).
_HEADERS = {
    "table": "x-arrowport-table",
    "mode": "x-arrowport-mode",
    "chunk_size": "x-arrowport-chunk-size",
    "producer_id": "x-arrowport-producer-id",
    "sequence": "x-arrowport-sequence",
    "idempotency_key": "idempotency-key",
}
_OPTION_OF_HEADER = {header: name for name, header in _HEADERS.items()}
_QUERY_NAMES = tuple(name for name in TEXT_OPTIONS if name != "idempotency_key")
_HEADER_PREFIX = "x-arrowport-"


def _request_options(request: Request, stream: str) -> IngestRequest:
    """The options of a request: query parameters, or their header mirrors.

    Refused (422 ``invalid_options``) rather than guessed at: an unknown query parameter or
    ``X-Arrowport-*`` header, one given twice, and an empty value. A parameter and its header
    may both be given; the parameter wins.
    """
    given: dict[str, str] = {}
    for name, value in _query_items(request):
        if name not in _QUERY_NAMES:
            raise InvalidOptions(
                f"unknown query parameter {shown(name)}: use {', '.join(_QUERY_NAMES)}"
                + (
                    " (the idempotency key goes in the Idempotency-Key header)"
                    if name == "idempotency_key"
                    else ""
                ),
                field=name[:64],
            )
        _set_once(given, name, value, f"query parameter {name!r}")
    headers: dict[str, str] = {}
    for header, value in request.headers.items():
        if header in _OPTION_OF_HEADER:
            _set_once(headers, _OPTION_OF_HEADER[header], value, f"header {header!r}")
        elif header.startswith(_HEADER_PREFIX):
            raise InvalidOptions(
                f"unknown header {shown(header)}: use {', '.join(_HEADERS.values())}",
                field=header[:64],
            )
    return IngestRequest.from_text(stream, (headers | given).get)


def _query_items(request: Request) -> list[tuple[str, str]]:
    """The query's parameters, decoded as UTF-8 strictly: the framework's own decoding turns
    every invalid byte into U+FFFD, so ``producer_id=%FF`` and ``%FE`` were one producer."""
    try:
        text = request.scope["query_string"].decode("utf-8")
        return urllib.parse.parse_qsl(text, keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        raise InvalidOptions(
            "the query string is not UTF-8 (percent-encoded bytes included): encode "
            "parameters as UTF-8"
        ) from None


def _set_once(given: dict[str, str], name: str, value: str, what: str) -> None:
    if name in given:
        raise InvalidOptions(f"{what} is given more than once: send it once", field=name)
    if not value:
        raise InvalidOptions(
            f"{what} is empty: leave it out for the stream's configuration", field=name
        )
    given[name] = value


# Options are parsed by hand rather than declared as FastAPI parameters: this route carries the
# ingest hot path, and per-request parameter resolution cost more than the handler itself.
# ``_PARAMETERS`` documents them in the OpenAPI schema instead.
_PARAMETERS: list[dict[str, Any]] = [
    {"name": name, "in": where, "required": False, "schema": schema, "description": text}
    for name, where, schema, text in (
        (
            "table",
            "query",
            {"type": "string", "pattern": f"^{TABLE_NAME_PATTERN}$"},
            "Target table.",
        ),
        (
            "mode",
            "query",
            {"type": "string", "enum": list(WRITE_MODES)},
            "How rows meet the table.",
        ),
        ("chunk_size", "query", {"type": "integer", "minimum": 1}, "Rows per DuckDB chunk."),
        ("key_columns", "query", {"type": "string"}, "Comma-separated upsert key columns."),
        (
            "schema_policy",
            "query",
            {"type": "string", "enum": list(SCHEMA_POLICIES)},
            "strict or evolve.",
        ),
        (
            "duplicate_keys",
            "query",
            {"type": "string", "enum": list(DUPLICATE_KEYS_POLICIES)},
            "Upsert: error or last_wins.",
        ),
        ("dry_run", "query", {"type": "boolean"}, "Validate and report; write nothing."),
        (
            "producer_id",
            "query",
            {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH},
            "Producer offset: who sends.",
        ),
        ("sequence", "query", {"type": "integer", "minimum": 0}, "Producer offset: batch number."),
        (
            "Idempotency-Key",
            "header",
            {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH},
            "Retries with one key land once.",
        ),
        (
            "X-Arrowport-Table",
            "header",
            {"type": "string", "pattern": f"^{TABLE_NAME_PATTERN}$"},
            "Same as ?table=.",
        ),
        ("X-Arrowport-Mode", "header", {"type": "string", "enum": list(WRITE_MODES)}, "?mode="),
        ("X-Arrowport-Chunk-Size", "header", {"type": "integer", "minimum": 1}, "?chunk_size="),
        (
            "X-Arrowport-Producer-Id",
            "header",
            {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH},
            "Same as ?producer_id=.",
        ),
        ("X-Arrowport-Sequence", "header", {"type": "integer", "minimum": 0}, "?sequence="),
    )
]


# The route's path; :class:`~arrowport.api.direct_ingest.DirectIngest` serves its binary
# requests before FastAPI routes them.
STREAM_PATH = "/stream/{stream_name}"


@router.post(
    STREAM_PATH,
    response_model=IngestResponse,
    responses=_ERRORS,
    openapi_extra=_OPENAPI_BODY | {"parameters": _PARAMETERS},
    summary="Land an Arrow IPC stream in a DuckDB table (one transaction)",
)
async def ingest_stream(
    # Documented, not validated here: a bad name gets the contract's 400 invalid_name.
    stream_name: Annotated[str, Path(json_schema_extra={"pattern": f"^{STREAM_NAME_PATTERN}$"})],
    request: Request,
    principal: Annotated[Principal, Depends(require_ingest)],
) -> Response:
    return await ingest_request(request, stream_name, principal)


async def ingest_request(request: Request, stream_name: str, principal: Principal) -> Response:
    """Everything ``POST /stream/{stream_name}`` does once the caller may ingest there."""
    ingest = services(request).ingest
    # Whether the server still takes writes is decided now: one already running may finish.
    ingest.admission.check_accepting()
    media_type = media_type_of(request)
    if media_type not in (JSON, ARROW_STREAM):
        _unsupported(media_type)
    asked = _request_options(request, stream_name)
    client = client_id(principal)
    if media_type == JSON:
        reply = await ingest_json(
            ingest, asked, request, principal, client, _declared_length(request)
        )
    else:
        reply = await _ingest_binary(ingest, asked, request, principal, client)
    return JSONResponse(reply.to_json())


def _unsupported(media_type: str) -> None:
    raise UnsupportedMediaType(
        f"unsupported Content-Type {media_type or '(none)'!r}: send {ARROW_STREAM} "
        f"(raw Arrow IPC stream) or {JSON} (base64 inside JSON)",
        content_type=media_type or None,
    )


def _declared_length(request: Request) -> int | None:
    raw = request.headers.get("content-length")
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise InvalidOptions("Content-Length is not a number") from None


async def _ingest_binary(
    ingest: IngestService,
    asked: IngestRequest,
    request: Request,
    principal: Principal,
    client: str | None,
) -> IngestReply:
    limits = ingest.settings.limits
    options = ingest.streams.resolve(asked, principal)
    codec = content_encoding_codec(request.headers.get("content-encoding"))
    declared = _declared_length(request)
    if declared is not None and declared > limits.max_body_bytes:
        raise PayloadTooLarge(
            f"body of {declared} bytes exceeds the limit of {limits.max_body_bytes}",
            limit=limits.max_body_bytes,
        )
    # Measured: streaming a large body into DuckDB as it arrives beats receiving it whole first.
    if declared is not None and declared <= limits.small_body_bytes:
        with ingest.admission.holding(declared):
            body = await read_body(
                request.stream(), ingest.pace(), limits.small_body_bytes, declared
            )
            return await ingest.ingest_bytes(options, BytesBody(body, codec), client)
    return await ingest.ingest_pipe(options, request.stream(), codec, client)
