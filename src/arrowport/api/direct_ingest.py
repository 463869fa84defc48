"""``POST /stream/{stream_name}`` with an Arrow IPC body, served without FastAPI.

Under many small writers the event loop is the server's busiest thread, and FastAPI's layers
(its server-error, telemetry, body-limit, exception and exit-stack middleware, route matching,
dependency resolution) cost more per request than ingesting the request does. This pure ASGI
app sits in front of FastAPI, inside the request context, origin guard and CORS, and answers the
binary ingest route itself with the route's own code: the same authentication, the same
:func:`ingest_request`, the same mapping of failures to responses. Everything else (JSON
bodies, other routes) goes on to FastAPI, which also documents this route.
"""

from __future__ import annotations

import re

from fastapi import FastAPI
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from arrowport.api.errors import failure_response
from arrowport.api.ingest_routes import ARROW_STREAM, STREAM_PATH, ingest_request, media_type_of
from arrowport.api.security import authenticated, require_ingest
from arrowport.metrics import Metrics

# FastAPI's own pattern for the route's one path parameter: a segment without "/".
_STREAM = re.compile(r"/stream/([^/]+)")


class _Route:
    """What the access log and latency metric read from ``scope["route"]``."""

    path = STREAM_PATH


_ROUTE = _Route()


class DirectIngest:
    def __init__(self, app: FastAPI, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        name = self._stream_name(scope)
        if name is None:
            await self.app(scope, receive, send)
            return
        scope["app"] = self.app  # where the route's code finds the services, as under FastAPI
        request = Request(scope, receive)
        if media_type_of(request) != ARROW_STREAM:
            await self.app(scope, receive, send)
            return
        scope["path_params"] = {"stream_name": name}
        scope["route"] = _ROUTE
        try:
            principal = await require_ingest(name, await authenticated(request))
            response = await ingest_request(request, name, principal)
        except Exception as exc:
            response = failure_response(request, exc, self.metrics)
        await response(scope, receive, send)

    @staticmethod
    def _stream_name(scope: Scope) -> str | None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope.get("root_path"):
            return None
        match = _STREAM.fullmatch(scope["path"])
        return None if match is None else str(match.group(1))
