"""The FastAPI application factory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response
from starlette.types import ASGIApp

from arrowport import __version__
from arrowport.api import ingest_routes, read_routes
from arrowport.api.direct_ingest import DirectIngest
from arrowport.api.errors import install_error_handlers
from arrowport.api.middleware import RequestContext
from arrowport.api.openapi import install_openapi
from arrowport.api.origins import OriginGuard
from arrowport.api.security import docs_urls, install_docs_guard, require_metrics, with_cors
from arrowport.services import Services


def create_app(services: Services) -> ASGIApp:
    """The HTTP app around running services (which the app closes on shutdown).

    Request context, origin guard and CORS wrap FastAPI from outside, with the binary ingest
    route (:class:`DirectIngest`) innermost among them: every request is logged, measured and
    guarded the same way, and the route small writers hammer skips FastAPI's own layers.
    """
    settings = services.settings

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        app.state.draining = True
        # Off the event loop: closing waits for running writes, which may still need the loop
        # (a streamed body is fed by it).
        await asyncio.to_thread(services.close)

    app = FastAPI(
        title="Arrowport",
        version=__version__,
        summary="Land Apache Arrow data in DuckDB.",
        lifespan=lifespan,
        **docs_urls(settings),
    )
    app.state.services = services
    app.state.draining = False
    install_error_handlers(app, services.metrics)
    install_docs_guard(app, settings)
    app.include_router(ingest_routes.router)
    app.include_router(read_routes.router)
    install_openapi(app)
    if settings.api.enable_metrics:
        registry = services.metrics.registry

        @app.get("/metrics", include_in_schema=False, dependencies=[Depends(require_metrics)])
        async def metrics() -> Response:
            # Collectors may do work (the storage's figures): off the event loop.
            body = await run_in_threadpool(generate_latest, registry)
            return Response(body, media_type=CONTENT_TYPE_LATEST)

    served = with_cors(DirectIngest(app, services.metrics), settings)
    # Browsers from foreign origins are refused before routing; the request context, outermost,
    # still logs and measures those refusals.
    served = OriginGuard(served, settings=settings, metrics=services.metrics)
    return RequestContext(served, metrics=services.metrics)
