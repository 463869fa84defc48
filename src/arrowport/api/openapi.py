"""The OpenAPI document: FastAPI's, completed where it cannot see what the routes do.

Request bodies that routes parse by hand (the seed's JSON format, a query) are documented
from their models, with every schema they refer to under ``components``; path parameters get
the patterns the server enforces; and every operation lists every status it can answer with
(the origin guard's 403 on all of them, 401 where a token is needed). ``tests/test_openapi.py``
validates the result.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from arrowport.api.models import ErrorResponse, QueryAnswer, QueryRequest, StreamRequest
from arrowport.options import STREAM_NAME_PATTERN

_BODY_MODELS: tuple[type[BaseModel], ...] = (StreamRequest, QueryRequest, QueryAnswer)
_REF = "#/components/schemas/{model}"
_PATTERNS = {"stream_name": f"^{STREAM_NAME_PATTERN}$"}
_REASONS = {
    400: "Malformed request or payload",
    401: "No valid token",
    403: "Not allowed: scope, stream, read-only query, or a browser's foreign origin",
    404: "Unknown stream or table",
    408: "The body arrived too slowly, or the query ran out of time",
    409: "The batch conflicts with the table, or a delivery conflict",
    413: "Too large: body, message, columns, rows or answer",
    415: "Unsupported content type or encoding",
    422: "Invalid options or values",
    501: "Not implemented",
    503: "Overloaded, shutting down, storage unavailable (see Retry-After), or out of memory",
    507: "No room left to write",
}


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A model's JSON schema, referring to its parts under ``components``."""
    return model.model_json_schema(ref_template=_REF)


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses`` of a route that may answer with these error statuses (403 always: the
    origin guard answers it on every route)."""
    every = sorted({403, *statuses})
    return {status: {"description": _REASONS[status], "model": ErrorResponse} for status in every}


def install_openapi(app: FastAPI) -> None:
    """Serve the completed document as ``app.openapi()``."""
    cache: dict[str, Any] = {}

    def document() -> dict[str, Any]:
        if not cache:
            cache.update(_build(app))
        return cache

    app.openapi = document  # type: ignore[method-assign]


def _build(app: FastAPI) -> dict[str, Any]:
    doc = get_openapi(
        title=app.title,
        version=app.version,
        summary=app.summary,
        routes=app.routes,
    )
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for model in _BODY_MODELS:
        schema = model_schema(model)
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    for operations in doc["paths"].values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                pattern = _PATTERNS.get(parameter["name"])
                if pattern is not None and parameter["in"] == "path":
                    parameter["schema"]["pattern"] = pattern
            # FastAPI adds a 422 for its own parameter validation to every route with
            # parameters; these routes' parameters are plain text that cannot fail it.
            responses = operation.get("responses", {})
            if "HTTPValidationError" in str(responses.get("422", "")):
                del responses["422"]
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    return doc
