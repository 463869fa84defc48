"""Request ids, access log, latency and in-flight metrics: one pure ASGI middleware."""

from __future__ import annotations

import itertools
import os
import re
import time

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from arrowport.metrics import Metrics

log = structlog.get_logger("arrowport.access")
_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
# Unique per process start and request, without a random draw per request (urandom is a system
# call, measurable on the ingest hot path).
_PREFIX = os.urandom(6).hex()
_COUNTER = itertools.count(1)


class RequestContext:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _SAFE_ID.match(incoming) else f"{_PREFIX}-{next(_COUNTER):x}"
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self.metrics.in_flight.dec()
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            self.metrics.latency.labels(scope["method"], template, str(status)).observe(elapsed)
            log.info(
                "request",
                method=scope["method"],
                path=scope["path"],
                status=status,
                duration_ms=round(elapsed * 1000, 3),
            )
            structlog.contextvars.unbind_contextvars("request_id")
