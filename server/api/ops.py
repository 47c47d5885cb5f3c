"""Routes for operators and balancers: liveness, readiness, Prometheus metrics, and
loading or unloading a model by hand."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from server.api import fields
from server.api.body import hub_of, read_json
from server.engine.metrics import vllm_names
from server.errors import InvalidRequest, ModelUnavailable


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
    """hearth's own figures, then each loaded model's load figures under vLLM's names
    for LLM-aware routers."""
    hub = hub_of(request)
    for name, engine in hub.engines.items():
        resident = engine.resident_bytes()
        if resident is not None:
            hub.metrics.set("hearth_model_resident_bytes", resident, model=name)
    loaded = [model["id"] for model in hub.describe() if model["loaded"]]
    text = hub.metrics.render() + vllm_names(hub.metrics, loaded)
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4")


async def load_model(request: Request) -> Response:
    """``{"model"}``: load a model that models.toml names (making room as a request
    would) and answer with its entry of /v1/models once it is ready."""
    hub = hub_of(request)
    _, config = await hub.acquire(_model(await read_json(request)))
    return JSONResponse(next(m for m in hub.describe() if m["id"] == config.name))


async def unload_model(request: Request) -> Response:
    """``{"model"}``: unload a model now; 503 while it serves requests."""
    hub = hub_of(request)
    name = _model(await read_json(request))
    hub.unload(name)
    config = hub.models.resolve(name)
    assert config is not None
    return JSONResponse(next(m for m in hub.describe() if m["id"] == config.name))


def _model(body: object) -> str:
    name = fields.as_object(body).get("model")
    if not isinstance(name, str) or not name:
        raise InvalidRequest("'model' is required", param="model")
    return name


ROUTES = [
    Route("/health", health, methods=["GET"]),
    Route("/health/ready", ready, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/models/load", load_model, methods=["POST"]),
    Route("/models/unload", unload_model, methods=["POST"]),
]
