"""One place that turns failures into HTTP error bodies: ``{"status", "stream", "message", "code"}``."""

from __future__ import annotations

import json
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from arrowport.errors import ArrowportError, InvalidOptions, Overloaded, Unauthenticated
from arrowport.metrics import Metrics

log = structlog.get_logger(__name__)

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 401: "unauthenticated"}


def invalid_options(exc: ValidationError | RequestValidationError) -> InvalidOptions:
    """A request-shape validation failure as a 422 naming the first offending field."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"] if p not in ("query", "path", "header"))
    return InvalidOptions(f"{where or 'body'}: {first['msg']}", field=where or "body")


# Where a 401 says how to authenticate (RFC 6750).
CHALLENGE = 'Bearer realm="arrowport"'


def error_response(request: Request, error: ArrowportError, metrics: Metrics) -> JSONResponse:
    stream = request.path_params.get("stream_name")
    metrics.errors.labels(error.code, "http").inc()
    headers = {}
    if isinstance(error, Overloaded):
        headers["Retry-After"] = str(error.retry_after)
    if isinstance(error, Unauthenticated):
        headers["WWW-Authenticate"] = CHALLENGE
    refused = log.warning if error.server_fault else log.info
    refused("request refused", code=error.code, status=error.status, reason=error.message)
    return _AsciiJSONResponse(error.to_body(stream), status_code=error.status, headers=headers)


class _AsciiJSONResponse(JSONResponse):
    """JSON with every non-ASCII character escaped: a message may quote what the client sent,
    a lone surrogate (JSON can escape one) included, which UTF-8 cannot encode."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, allow_nan=False, separators=(",", ":")).encode("ascii")


def failure_response(request: Request, exc: Exception, metrics: Metrics) -> Response:
    """The answer to any failure of a request: the one mapping every route shares (FastAPI's
    exception handlers and the direct ingest path both call it)."""
    if isinstance(exc, ArrowportError):
        return error_response(request, exc, metrics)
    if isinstance(exc, RequestValidationError):
        return error_response(request, invalid_options(exc), metrics)
    if isinstance(exc, StarletteHTTPException):
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        metrics.errors.labels(code, "http").inc()
        body = {"status": "error", "message": str(exc.detail), "code": code}
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)
    if isinstance(exc, ClientDisconnect):
        # Nobody is left to read an answer; not a server error. 499 as nginx logs it.
        log.info("client disconnected before its request was read")
        metrics.errors.labels("client_disconnected", "http").inc()
        return Response(status_code=499)
    log.exception("unexpected error", exc_info=exc)
    metrics.errors.labels("internal_error", "http").inc()
    body = {
        "status": "error",
        "message": "internal error; the server log has the details",
        "code": "internal_error",
    }
    stream = request.path_params.get("stream_name")
    if stream is not None:
        body = {"status": "error", "stream": stream} | {k: body[k] for k in ("message", "code")}
    return JSONResponse(body, status_code=500)


def install_error_handlers(app: FastAPI, metrics: Metrics) -> None:
    async def on_failure(request: Request, exc: Exception) -> Response:
        return failure_response(request, exc, metrics)

    for kind in (
        ClientDisconnect,
        ArrowportError,
        RequestValidationError,
        StarletteHTTPException,
        Exception,
    ):
        app.add_exception_handler(kind, on_failure)
