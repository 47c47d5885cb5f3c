"""The application factory: routes, error rendering, and the models' lifespan."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response

from server.api import ops, security
from server.api.anthropic import ROUTES as ANTHROPIC_ROUTES
from server.api.dialects import error_response
from server.api.limits import HeadCheck
from server.api.ollama import ROUTES as OLLAMA_ROUTES
from server.api.openai import ROUTES as OPENAI_ROUTES
from server.api.responses import ROUTES as RESPONSES_ROUTES
from server.api.responses.store import ResponseStore
from server.engine.hub import ModelHub
from server.errors import HearthError, InternalError, InvalidRequest, MethodNotAllowed, NotFound
from server.settings import Settings

log = logging.getLogger("hearth.app")


async def _hearth_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HearthError)
    return error_response(exc, request.url.path)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        error: HearthError = MethodNotAllowed(f"method {request.method} is not allowed here")
    elif exc.status_code == 404:
        error = NotFound(f"no route for {request.method} {request.url.path}", code="not_found")
    elif exc.status_code < 500:
        error = InvalidRequest(str(exc.detail))
    else:
        error = InternalError(str(exc.detail))
    response = error_response(error, request.url.path)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(InternalError("internal server error"), request.url.path)


def create_app(
    hub: ModelHub, settings: Settings | None = None, *, load_in_background: bool = False
) -> Starlette:
    """The app. Its start-up starts the models' engines and, unless
    ``load_in_background``, waits for them to load. ``hearth serve`` loads in the
    background: uvicorn binds only after start-up, and the server should answer
    /health (and 503 on /health/ready) during a long load."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await asyncio.to_thread(hub.start)
        if not load_in_background:
            await asyncio.to_thread(hub.wait_loaded)
        try:
            yield
        finally:
            await asyncio.to_thread(hub.stop)

    app = Starlette(
        routes=OPENAI_ROUTES + RESPONSES_ROUTES + ANTHROPIC_ROUTES + OLLAMA_ROUTES + ops.ROUTES,
        middleware=[Middleware(HeadCheck), *security.middleware(settings)],
        lifespan=lifespan,
        exception_handlers={
            HearthError: _hearth_error,
            HTTPException: _http_error,
            Exception: _unexpected,
        },
    )
    app.state.hub = hub
    app.state.responses = ResponseStore()
    app.state.settings = settings
    return app
