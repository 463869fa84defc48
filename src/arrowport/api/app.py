"""The FastAPI application factory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from arrowport import __version__
from arrowport.api import ingest_routes, read_routes
from arrowport.api.errors import install_error_handlers
from arrowport.api.middleware import RequestContext
from arrowport.api.security import docs_urls, install_security, require_metrics
from arrowport.ingest.service import IngestService


def create_app(service: IngestService) -> FastAPI:
    """Build the HTTP app around a running ingest service (which the app closes on shutdown)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        app.state.draining = True
        # Off the event loop: closing waits for running writes, which may still need the loop
        # (a streamed body is fed by it).
        await asyncio.to_thread(service.close)

    app = FastAPI(
        title="Arrowport",
        version=__version__,
        summary="Land Apache Arrow data in DuckDB.",
        lifespan=lifespan,
        **docs_urls(service.settings),
    )
    app.state.service = service
    app.state.draining = False
    install_error_handlers(app, service.metrics)
    install_security(app, service.settings)
    app.include_router(ingest_routes.router)
    app.include_router(read_routes.router)
    if service.settings.api.enable_metrics:
        registry = service.metrics.registry

        @app.get("/metrics", include_in_schema=False, dependencies=[Depends(require_metrics)])
        async def metrics() -> Response:
            return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(RequestContext, metrics=service.metrics)
    return app
