"""Health, streams, tables and read-only queries."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import IO, Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response, StreamingResponse
from pydantic import ValidationError
from starlette.requests import ClientDisconnect

from arrowport.api.errors import invalid_options
from arrowport.api.models import ProducerResponse, QueryRequest, StreamInfo, TableResponse
from arrowport.api.openapi import error_responses
from arrowport.api.results import ARROW_STREAM, CSV, JSON, chunks, render, size
from arrowport.api.security import require_ingest_or_read, require_read, services
from arrowport.errors import (
    ArrowportError,
    InvalidOptions,
    ShuttingDown,
    StorageError,
    UnsupportedMediaType,
)
from arrowport.ingest.pipe import read_body
from arrowport.ingest.seed_json import parse_json
from arrowport.reads import result_write_options
from arrowport.storage.query_inputs import check_parameters, check_sql
from arrowport.storage.query_stop import QueryStop

router = APIRouter()


# /health and /ready stay open; everything else needs a token once tokens are configured.
_READ = [Depends(require_read)]


@router.get("/health", summary="Liveness: the process answers", responses=error_responses())
@router.head("/health", include_in_schema=False)  # what load balancers and probes often send
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/ready",
    summary="Readiness: the database is open and writes are accepted",
    responses=error_responses(503),
)
@router.head("/ready", include_in_schema=False)
async def ready(request: Request) -> dict[str, str]:
    found = services(request)
    if getattr(request.app.state, "draining", False) or not found.ingest.admission.accepting:
        raise ShuttingDown("the server is shutting down")
    problem = await run_in_threadpool(found.storage.ready)
    if problem is not None:
        raise StorageError(f"not ready: {problem}")
    return {"status": "ready"}


@router.get(
    "/streams",
    response_model=list[StreamInfo],
    responses=error_responses(401),
    summary="Configured streams",
    dependencies=_READ,
)
async def streams(request: Request) -> list[dict[str, Any]]:
    found = services(request)
    return [found.ingest.streams.describe(name) for name in sorted(found.settings.streams)]


@router.get(
    "/streams/{stream_name}",
    response_model=StreamInfo,
    responses=error_responses(400, 401, 404),
    summary="What a request to a stream is written with, unless it says otherwise",
    dependencies=[Depends(require_ingest_or_read)],
)
async def stream(stream_name: str, request: Request) -> dict[str, Any]:
    return services(request).ingest.streams.describe(stream_name)


@router.get(
    "/streams/{stream_name}/producers/{producer_id}",
    response_model=ProducerResponse,
    responses=error_responses(400, 401, 404, 422, 503),
    summary="The last sequence committed for a producer (where a restarted producer resumes)",
    dependencies=[Depends(require_ingest_or_read)],
)
async def producer(stream_name: str, producer_id: str, request: Request) -> dict[str, Any]:
    last = await run_in_threadpool(services(request).ingest.last_sequence, stream_name, producer_id)
    return {
        "stream": stream_name,
        "producer_id": producer_id,
        "last_sequence": last,
        "next_sequence": None if last is None else last + 1,
    }


@router.get(
    "/tables",
    response_model=list[TableResponse],
    responses=error_responses(401, 503),
    summary="Tables with their columns",
    dependencies=_READ,
)
async def tables(request: Request) -> list[dict[str, Any]]:
    infos = await run_in_threadpool(services(request).reads.tables)
    return [info.to_json() for info in infos]


@router.get(
    "/tables/{name}",
    response_model=TableResponse,
    responses=error_responses(400, 401, 404, 503),
    summary="One table",
    dependencies=_READ,
)
async def table(name: str, request: Request) -> dict[str, Any]:
    info = await run_in_threadpool(services(request).reads.table, name)
    return info.to_json()


async def _query_request(request: Request) -> QueryRequest:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in ("application/json", "text/plain", ""):
        raise UnsupportedMediaType(
            f"unsupported Content-Type {media_type!r}: send application/json or text/plain"
        )
    _check_uncompressed(request)
    ingest = services(request).ingest
    limit = services(request).settings.limits.max_query_body_bytes
    declared = request.headers.get("content-length")
    hint = int(declared) if declared and declared.isdigit() else None
    body = await read_body(request.stream(), ingest.pace(), limit, hint)
    if media_type == "text/plain":
        try:
            parsed = QueryRequest(sql=body.decode("utf-8"))
        except UnicodeDecodeError:
            raise InvalidOptions("the SQL text is not UTF-8") from None
    else:
        try:
            parsed = QueryRequest.model_validate(parse_json(body))
        except ValidationError as exc:
            raise invalid_options(exc) from None
    # JSON's escapes can carry what DuckDB cannot take (a lone surrogate, values nested a
    # thousand deep): refused here, before the query waits for a turn.
    check_sql(parsed.sql)
    if parsed.params:
        # A megabyte of values takes a while to walk: not on the event loop.
        await run_in_threadpool(check_parameters, parsed.params)
    return parsed


def _check_uncompressed(request: Request) -> None:
    """415 for a compressed body: a query is small, and read as it is, gzip's bytes were
    answered as JSON or SQL that is not valid (400, 422) instead of as the encoding refused."""
    encoding = request.headers.get("content-encoding", "").strip().lower()
    if encoding not in ("", "identity"):
        raise UnsupportedMediaType(
            f"unsupported Content-Encoding {encoding!r}: send the query uncompressed",
            content_encoding=encoding,
        )


_ANSWER_TYPES = (ARROW_STREAM, JSON, CSV)  # in the order preferred at equal quality


def _accepted(request: Request) -> str:
    """The answer's media type: of those served, the one ``Accept`` gives the highest quality
    (``q``), each taking it from its most specific range (``text/csv`` over ``text/*`` over
    ``*/*``); Arrow when the header names none of them."""
    ranges: dict[str, float] = {}
    for part in request.headers.get("accept", "").lower().split(","):
        name, *parameters = (piece.strip() for piece in part.split(";"))
        quality = 1.0
        for parameter in parameters:
            key, _, value = parameter.partition("=")
            if key.strip() == "q":
                try:
                    quality = min(max(float(value), 0.0), 1.0)
                except ValueError:
                    quality = 0.0
        if name:
            ranges.setdefault(name, quality)
    best, best_quality = ARROW_STREAM, 0.0
    for media_type in _ANSWER_TYPES:
        family = media_type.split("/")[0] + "/*"
        quality = next((ranges[r] for r in (media_type, family, "*/*") if r in ranges), 0.0)
        if quality > best_quality:
            best, best_quality = media_type, quality
    return best


@router.post(
    "/query",
    responses=error_responses(400, 401, 408, 413, 415, 422, 503)
    | {
        200: {
            "description": "The answer, rendered whole before it is sent.",
            "content": {
                ARROW_STREAM: {"schema": {"type": "string", "format": "binary"}},
                JSON: {"schema": {"$ref": "#/components/schemas/QueryAnswer"}},
                CSV: {"schema": {"type": "string"}},
            },
        }
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/QueryRequest"}},
                "text/plain": {"schema": {"type": "string"}},
            },
        }
    },
    summary="Run one read-only SELECT; Arrow IPC stream (default), JSON or CSV by Accept",
    dependencies=_READ,
)
async def query(request: Request) -> Response:
    parsed = await _query_request(request)
    found = services(request)
    reads = found.reads
    media_type = _accepted(request)

    stop = QueryStop()

    def answer() -> IO[bytes]:
        result = reads.query(parsed.sql, parsed.params, stop)
        return render(
            result,
            media_type,
            reads.budget(),
            result_write_options(found.settings.compression),
            found.settings.flight.spool_dir,
        )

    # A client that goes away stops its query: it would hold a query turn until it finished.
    watcher = asyncio.ensure_future(_when_gone(request, stop))
    try:
        spool = await reads.run(answer)
    except ArrowportError:
        if stop.requested:  # stopped because its client went: no query error
            raise ClientDisconnect() from None
        raise
    finally:
        watcher.cancel()
    headers = {"Content-Length": str(size(spool))}
    return StreamingResponse(chunks(spool), media_type=media_type, headers=headers)


async def _when_gone(request: Request, then: Callable[[], None]) -> None:
    """Call ``then`` once the client disconnects (its request body is read already)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
    then()
