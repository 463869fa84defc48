"""Health, streams, tables and read-only queries."""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import math
import uuid
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.csv as pa_csv
from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response, StreamingResponse
from pydantic import ValidationError

from arrowport.api.errors import invalid_options
from arrowport.api.ingest_routes import ARROW_STREAM
from arrowport.api.models import (
    ErrorResponse,
    ProducerResponse,
    QueryRequest,
    StreamInfo,
    TableResponse,
)
from arrowport.api.security import require_ingest_or_read, require_read
from arrowport.errors import (
    InvalidJSON,
    InvalidOptions,
    QueryError,
    ShuttingDown,
    UnsupportedMediaType,
)
from arrowport.ingest.service import IngestService
from arrowport.storage.query import QueryResult, describe_table, list_tables, run_query

router = APIRouter()

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse} for status in (400, 401, 403, 404, 415, 422, 503)
}
# /health and /ready stay open; everything else needs a token once tokens are configured.
_READ = [Depends(require_read)]


def _service(request: Request) -> IngestService:
    service: IngestService = request.app.state.service
    return service


@router.get("/health", summary="Liveness: the process answers")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready", summary="Readiness: the database is open and writes are accepted")
async def ready(request: Request) -> dict[str, str]:
    if getattr(request.app.state, "draining", False) or not _service(request).accepting:
        raise ShuttingDown("the server is shutting down")
    return {"status": "ready"}


@router.get(
    "/streams",
    response_model=list[StreamInfo],
    summary="Configured streams",
    dependencies=_READ,
)
async def streams(request: Request) -> list[dict[str, Any]]:
    settings = _service(request).settings
    return [
        {
            "name": name,
            "table": _service(request).stream_table(name),
            "mode": stream.mode,
            "chunk_size": stream.chunk_size or settings.defaults.chunk_size,
            "compression": stream.compression,
        }
        for name, stream in sorted(settings.streams.items())
    ]


@router.get(
    "/streams/{stream_name}/producers/{producer_id}",
    response_model=ProducerResponse,
    responses=_ERRORS,
    summary="The last sequence committed for a producer (where a restarted producer resumes)",
    dependencies=[Depends(require_ingest_or_read)],
)
async def producer(stream_name: str, producer_id: str, request: Request) -> dict[str, Any]:
    last = await run_in_threadpool(_service(request).last_sequence, stream_name, producer_id)
    return {
        "stream": stream_name,
        "producer_id": producer_id,
        "last_sequence": last,
        "next_sequence": None if last is None else last + 1,
    }


@router.get(
    "/tables",
    response_model=list[TableResponse],
    summary="Tables with their columns",
    dependencies=_READ,
)
async def tables(request: Request) -> list[dict[str, Any]]:
    infos = await run_in_threadpool(list_tables, _service(request).db)
    return [info.to_json() for info in infos]


@router.get(
    "/tables/{name}",
    response_model=TableResponse,
    responses=_ERRORS,
    summary="One table",
    dependencies=_READ,
)
async def table(name: str, request: Request) -> dict[str, Any]:
    info = await run_in_threadpool(describe_table, _service(request).db, name)
    return info.to_json()


async def _query_request(request: Request) -> QueryRequest:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await request.body()
    if media_type == "text/plain":
        return QueryRequest(sql=body.decode("utf-8", errors="replace"))
    if media_type not in ("application/json", ""):
        raise UnsupportedMediaType(
            f"unsupported Content-Type {media_type!r}: send application/json or text/plain"
        )
    try:
        return QueryRequest.model_validate(json.loads(body))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidJSON(f"body is not valid JSON: {exc}") from None
    except ValidationError as exc:
        raise invalid_options(exc) from None


def _accepted(request: Request) -> str:
    accept = request.headers.get("accept", "").lower()
    for media_type in (ARROW_STREAM, "application/json", "text/csv"):
        if media_type in accept:
            return media_type
    return ARROW_STREAM


@router.post(
    "/query",
    responses=_ERRORS | {200: {"content": {ARROW_STREAM: {}, "text/csv": {}}}},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": QueryRequest.model_json_schema()},
                "text/plain": {"schema": {"type": "string"}},
            },
        }
    },
    summary="Run one read-only SELECT; Arrow IPC stream (default), JSON or CSV by Accept",
    dependencies=_READ,
)
async def query(request: Request) -> Response:
    parsed = await _query_request(request)
    service = _service(request)
    result = await run_in_threadpool(run_query, service.db, parsed.sql, parsed.params)
    media_type = _accepted(request)
    if media_type == ARROW_STREAM:
        batches = iter(result)
        first = await run_in_threadpool(_first_batch, batches)
        chunks = _ipc_chunks(result.schema, first, batches, _write_options(service))
        return StreamingResponse(chunks, media_type=ARROW_STREAM)
    table = await run_in_threadpool(_read_all, result)
    if media_type == "text/csv":
        return Response(await run_in_threadpool(_csv, table), media_type="text/csv")
    content = await run_in_threadpool(_json_body, table)
    return Response(content, media_type="application/json")


def _json_body(table: pa.Table) -> bytes:
    """The JSON answer, built off the event loop (rows become Python objects here)."""
    body = {
        "columns": [{"name": f.name, "type": str(f.type)} for f in table.schema],
        "rows": table.to_pylist(),
        "row_count": table.num_rows,
    }
    text = json.dumps(_finite(body), default=_json_value, allow_nan=False, separators=(",", ":"))
    return text.encode()


def _write_options(service: IngestService) -> pa.ipc.IpcWriteOptions:
    """IPC buffer compression of query results: ``compression.algorithm`` at its ``level``."""
    settings = service.settings.compression
    if settings.algorithm == "none":
        return pa.ipc.IpcWriteOptions()
    level = settings.level if settings.algorithm == "zstd" else None
    return pa.ipc.IpcWriteOptions(compression=pa.Codec(settings.algorithm, level))


def _first_batch(batches: Iterator[pa.RecordBatch]) -> pa.RecordBatch | None:
    try:
        return next(batches, None)
    except (pa.ArrowException, OSError) as exc:
        raise QueryError(f"query failed: {exc}") from None


def _read_all(result: QueryResult) -> pa.Table:
    # A query can fail while its rows are fetched; DuckDB's error then surfaces from the Arrow
    # reader as an Arrow/OS error rather than a duckdb.Error.
    try:
        return result.read_all()
    except (pa.ArrowException, OSError) as exc:
        raise QueryError(f"query failed: {exc}") from None


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: such floats become null (anywhere in nested values)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _csv(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    try:
        pa_csv.write_csv(table, sink)
    except pa.ArrowException as exc:
        raise InvalidOptions(f"this result cannot be written as CSV: {exc}") from None
    data: bytes = sink.getvalue().to_pybytes()
    return data


class _Collector:
    """A write-only file that hands back what was written since the last call."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


def _ipc_chunks(
    schema: pa.Schema,
    first: pa.RecordBatch | None,
    rest: Iterator[pa.RecordBatch],
    options: pa.ipc.IpcWriteOptions,
) -> Iterator[bytes]:
    """Serialize batches as DuckDB produces them. The first batch was fetched before the
    response started (so most failures are still a clean 400); a failure later breaks the
    response off, so the client sees an error, never a silently short result."""
    collector = _Collector()
    writer = pa.ipc.new_stream(pa.PythonFile(collector, mode="w"), schema, options=options)
    if first is not None:
        writer.write_batch(first)
        yield collector.take()
        for batch in rest:
            writer.write_batch(batch)
            yield collector.take()
    writer.close()
    yield collector.take()


def _json_value(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, uuid.UUID):
        return str(value)
    return str(value)
