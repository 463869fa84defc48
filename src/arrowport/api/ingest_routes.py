"""``POST /stream/{stream_name}``: the seed's JSON/base64 body and the raw Arrow IPC fast path."""

from __future__ import annotations

import asyncio
import binascii
import json
from typing import Annotated, Any

import pyarrow as pa
import pybase64
from fastapi import APIRouter, Depends, Header, Query, Request
from pydantic import ValidationError

from arrowport.api.models import ErrorResponse, IngestResponse, StreamRequest
from arrowport.api.security import check_target, require_ingest
from arrowport.errors import (
    InvalidBase64,
    InvalidIPC,
    InvalidJSON,
    InvalidOptions,
    PayloadTooLarge,
    RequestTimeout,
    UnsupportedMediaType,
)
from arrowport.ingest.payload import content_encoding_codec, sniff_codec
from arrowport.ingest.service import DeliveryRequest, IngestOptions, IngestService

ARROW_STREAM = "application/vnd.apache.arrow.stream"
JSON = "application/json"
# Parsing JSON this large on the event loop would stall other requests.
_INLINE_JSON_BYTES = 256 * 1024

router = APIRouter()

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse}
    for status in (400, 401, 403, 404, 409, 413, 415, 422, 503, 507)
}

_OPENAPI_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            JSON: {
                "schema": StreamRequest.model_json_schema(
                    ref_template="#/components/schemas/{model}"
                )
            },
            ARROW_STREAM: {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _service(request: Request) -> IngestService:
    service: IngestService = request.app.state.service
    return service


@router.post(
    "/stream/{stream_name}",
    response_model=IngestResponse,
    responses=_ERRORS,
    openapi_extra=_OPENAPI_BODY,
    summary="Land an Arrow IPC stream in a DuckDB table (one transaction)",
    dependencies=[Depends(require_ingest)],
)
async def ingest_stream(
    stream_name: str,
    request: Request,
    table: Annotated[str | None, Query(description="Target table (binary body).")] = None,
    mode: Annotated[str | None, Query(description="append, replace or create.")] = None,
    chunk_size: Annotated[int | None, Query(ge=1, description="Rows per DuckDB chunk.")] = None,
    x_arrowport_table: Annotated[str | None, Header()] = None,
    x_arrowport_mode: Annotated[str | None, Header()] = None,
    x_arrowport_chunk_size: Annotated[int | None, Header(ge=1)] = None,
    idempotency_key: Annotated[
        str | None, Header(description="Retries with the same key land once.")
    ] = None,
    producer_id: Annotated[str | None, Query(description="Producer offset: who sends.")] = None,
    sequence: Annotated[
        int | None, Query(ge=0, description="Producer offset: this batch's number.")
    ] = None,
    x_arrowport_producer_id: Annotated[str | None, Header()] = None,
    x_arrowport_sequence: Annotated[int | None, Header(ge=0)] = None,
    key_columns: Annotated[
        str | None, Query(description="Comma-separated key columns for mode upsert.")
    ] = None,
    schema_policy: Annotated[str | None, Query(description="strict or evolve.")] = None,
    duplicate_keys: Annotated[
        str | None, Query(description="Upsert: error (default) or last_wins.")
    ] = None,
    dry_run: Annotated[bool, Query(description="Validate and report; write nothing.")] = False,
) -> dict[str, Any]:
    service = _service(request)
    media_type = _media_type(request)
    delivery = DeliveryRequest(
        idempotency_key=idempotency_key,
        producer_id=producer_id or x_arrowport_producer_id,
        sequence=sequence if sequence is not None else x_arrowport_sequence,
    )
    if media_type not in (JSON, ARROW_STREAM):
        _unsupported(media_type)
    declared = _declared_length(request) or 0
    service.reserve_bytes(declared)
    try:
        if media_type == JSON:
            return await _ingest_json(service, stream_name, request, delivery)
        options = service.resolve(
            stream_name,
            table=table or x_arrowport_table,
            mode=mode or x_arrowport_mode,
            chunk_size=chunk_size or x_arrowport_chunk_size,
            key_columns=[k.strip() for k in key_columns.split(",")] if key_columns else None,
            schema_policy=schema_policy,
            duplicate_keys=duplicate_keys,
            dry_run=dry_run,
        )
        check_target(request, options)
        return await _ingest_binary(service, options, request, delivery)
    finally:
        service.release_bytes(declared)


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


async def _read_body(request: Request, limit: int, timeout: float) -> bytes:
    declared = _declared_length(request)
    if declared is not None and declared > limit:
        raise PayloadTooLarge(f"body of {declared} bytes exceeds the limit of {limit}", limit=limit)
    parts = []
    size = 0
    chunks = aiter(request.stream())
    while True:
        try:
            chunk = await asyncio.wait_for(anext(chunks), timeout)
        except StopAsyncIteration:
            break
        except TimeoutError:
            raise RequestTimeout(
                f"no body data received for {timeout:g} seconds; giving up"
            ) from None
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body exceeds the limit of {limit} bytes", limit=limit)
        parts.append(chunk)
    return b"".join(parts)


async def _ingest_binary(
    service: IngestService,
    options: IngestOptions,
    request: Request,
    delivery: DeliveryRequest,
) -> dict[str, Any]:
    limits = service.settings.limits
    codec = content_encoding_codec(request.headers.get("content-encoding"))
    declared = _declared_length(request)
    if declared is not None and declared > limits.max_body_bytes:
        raise PayloadTooLarge(
            f"body of {declared} bytes exceeds the limit of {limits.max_body_bytes}",
            limit=limits.max_body_bytes,
        )
    if declared is not None and declared <= limits.small_body_bytes:
        body = await _read_body(request, limits.small_body_bytes, limits.body_timeout_seconds)
        result = await service.ingest_bytes(options, body, codec, delivery=delivery)
    else:
        result = await service.ingest_pipe(
            options, request.stream(), codec, limits.max_body_bytes, delivery
        )
    return result.to_json()


def _decode_json(body: bytes) -> tuple[StreamRequest, bytes, pa.Schema | None]:
    try:
        document = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidJSON(f"body is not valid JSON: {exc}") from None
    try:
        parsed = StreamRequest.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise InvalidOptions(f"{where}: {first['msg']}", field=where) from None
    try:
        # pybase64 (SIMD) decodes ~10x faster than the standard library: 54 MB in ~30 ms.
        data = pybase64.b64decode(parsed.batch.data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidBase64(f"batch.data is not valid base64: {exc}") from None
    schema = None
    if parsed.batch.arrow_schema:
        try:
            raw_schema = pybase64.b64decode(parsed.batch.arrow_schema, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidBase64(f"batch.arrow_schema is not valid base64: {exc}") from None
        try:
            schema = pa.ipc.read_schema(pa.py_buffer(raw_schema))
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise InvalidIPC(
                f"batch.arrow_schema is not a serialized Arrow schema: {exc}"
            ) from None
    return parsed, data, schema


async def _ingest_json(
    service: IngestService, stream: str, request: Request, delivery: DeliveryRequest
) -> dict[str, Any]:
    limits = service.settings.limits
    body = await _read_body(request, limits.max_json_body_bytes, limits.body_timeout_seconds)
    if len(body) <= _INLINE_JSON_BYTES:
        parsed, data, schema = _decode_json(body)
    else:
        parsed, data, schema = await asyncio.to_thread(_decode_json, body)
    del body
    config = parsed.config
    options = service.resolve(
        stream,
        table=config.target_table,
        mode=config.mode,
        chunk_size=config.chunk_size,
        key_columns=config.key_columns,
        schema_policy=config.schema_policy,
        duplicate_keys=config.duplicate_keys,
        dry_run=config.dry_run,
    )
    check_target(request, options)
    codec = sniff_codec(data[:4])
    result = await service.ingest_bytes(
        options, data, codec, expected_schema=schema, delivery=delivery
    )
    return result.to_json()
