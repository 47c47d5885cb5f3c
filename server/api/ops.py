"""Routes for operators and balancers: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from server.api.body import hub_of
from server.errors import ModelUnavailable


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def ready(request: Request) -> Response:
    """Readiness: every model to serve is loaded and its engine alive; else 503 with
    the reason (``loading: <models>``, a model that failed or died, a drain)."""
    hub = hub_of(request)
    if not hub.ready():
        raise ModelUnavailable("not ready: " + hub.not_ready_reason(), retry_after=5)
    return JSONResponse({"status": "ready"})


async def metrics(request: Request) -> Response:
    hub = hub_of(request)
    for name, engine in hub.engines.items():
        resident = engine.resident_bytes()
        if resident is not None:
            hub.metrics.set("hearth_model_resident_bytes", resident, model=name)
    text = hub.metrics.render()
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4")


ROUTES = [
    Route("/health", health, methods=["GET"]),
    Route("/health/ready", ready, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]
