"""HTTP access control: FastAPI dependencies over :mod:`arrowport.auth`, CORS and guarded docs.

Routes declare what they need::

    @router.get("/tables", dependencies=[Depends(require_read)])

``/health`` and ``/ready`` declare nothing and stay open. With no tokens configured every
dependency lets the request through (the loopback-only developer default).
"""

from __future__ import annotations

from typing import Annotated, Any

import structlog
from fastapi import Depends, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp

from arrowport.auth import Principal, auth_enabled, authenticate
from arrowport.config import AuthSettings, Settings
from arrowport.errors import BadRequest
from arrowport.services import Services


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


def _auth(request: Request) -> AuthSettings:
    return services(request).settings.auth


async def authenticated(request: Request) -> Principal:
    """Any valid token (401 without one); the principal is kept on ``request.state``."""
    cached: Principal | None = getattr(request.state, "principal", None)
    if cached is not None:
        return cached
    principal = authenticate(_auth(request), request.headers.get("authorization"))
    request.state.principal = principal
    if not principal.anonymous:
        structlog.contextvars.bind_contextvars(token=principal.name)
    return principal


Authenticated = Annotated[Principal, Depends(authenticated)]


async def require_read(principal: Authenticated) -> Principal:
    principal.require("read")
    return principal


async def require_ingest(stream_name: str, principal: Authenticated) -> Principal:
    principal.require("ingest", stream=stream_name)
    return principal


async def require_ingest_or_read(stream_name: str, principal: Authenticated) -> Principal:
    """Delivery state of a stream: its producers may see it, and so may readers."""
    if not principal.allows("ingest", stream=stream_name):
        principal.require("read")
    return principal


async def require_metrics(request: Request) -> None:
    if not _auth(request).public_metrics:
        await authenticated(request)


def client_id(principal: Principal) -> str | None:
    """Who counts as one client for per-client limits: the token (none without
    authentication, where every caller is the same anonymous one)."""
    return None if principal.anonymous else principal.name


def docs_public(settings: Settings) -> bool:
    return settings.auth.public_docs or not auth_enabled(settings.auth)


def docs_urls(settings: Settings) -> dict[str, Any]:
    """None of FastAPI's own docs routes: :func:`install_docs_guard` adds them, guarded or
    not. (FastAPI's are plain Starlette routes, which name no route in the request's scope:
    their requests were timed under ``route="unmatched"``, with unknown paths.)"""
    return {"docs_url": None, "redoc_url": None, "openapi_url": None}


class _CodedCors(CORSMiddleware):
    """Starlette's CORS, whose refused preflights are answered as every other refusal is: JSON
    400 ``bad_request``, not a line of text. (A foreign origin never gets here: the origin guard
    outside refuses it 403 ``forbidden_origin``.)"""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        refused = bytes(response.body).decode()  # "Disallowed CORS origin, method"
        error = BadRequest(
            f"{refused} (allowed: origins in api.cors_origins, GET and POST, any headers, no "
            "private-network access)"
        )
        headers = {
            k: v for k, v in response.headers.items() if k.lower().startswith(("access-", "vary"))
        }
        return JSONResponse(error.to_body(), status_code=error.status, headers=headers)


def with_cors(app: ASGIApp, settings: Settings) -> ASGIApp:
    """``app`` behind CORS when origins are configured (normalised by the configuration as
    browsers send them, and as the origin guard compares them)."""
    if not settings.api.cors_origins:
        return app
    return _CodedCors(
        app,
        allow_origins=settings.api.cors_origins,
        allow_methods=["GET", "POST"],
        allow_headers=["*"],
        expose_headers=["X-Request-Id", "Retry-After"],
    )


def install_docs_guard(app: FastAPI, settings: Settings) -> None:
    """``/docs``, ``/redoc`` and ``/openapi.json``, token-guarded when they are not public."""
    guarded = [] if docs_public(settings) else [Depends(authenticated)]

    @app.get("/openapi.json", include_in_schema=False, dependencies=guarded)
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=guarded)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} - docs")

    @app.get("/redoc", include_in_schema=False, dependencies=guarded)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url="/openapi.json", title=f"{app.title} - ReDoc")
