"""Ollama's ``POST /api/embed`` (``input``: a string or strings -> ``embeddings``) and its
older ``POST /api/embeddings`` (``prompt`` -> ``embedding``), for a model with
``task = "embed"``.

``truncate`` (default true, as Ollama's) cuts an input over the model's limit, or over
``options.num_ctx`` where that is smaller; false refuses it. ``dimensions`` for a
matryoshka model only. ``keep_alive`` steers residency as on ``/api/chat``. The other
``options`` are checked as there and change nothing here. An empty input (``""``,
``[]``) only loads the model, as in Ollama, and answers with no vectors.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from backends.base import EMBED
from server.api import embedding as e
from server.api import fields as f
from server.api.body import hub_of, read_json
from server.api.ollama import options as o
from server.api.ollama.catalogue import find
from server.api.ollama.render import NS
from server.api.ollama.schemas import model_name
from server.api.relay import embedded
from server.config import ModelConfig
from server.engine.requests import EmbeddingRequest

EMBED_FIELDS = {"model", "input", "truncate", "dimensions", "keep_alive", "options"}
EMBEDDINGS_FIELDS = {"model", "prompt", "keep_alive", "options"}


@dataclass(frozen=True, slots=True)
class ParsedEmbed:
    embedding: EmbeddingRequest  # inputs empty: load the model only


def parse(body: Any, config: ModelConfig, *, legacy: bool) -> ParsedEmbed:
    fields = e.known_fields(body, EMBEDDINGS_FIELDS if legacy else EMBED_FIELDS)
    param = "prompt" if legacy else "input"
    value = fields.get(param)
    inputs = () if value in (None, "", []) else e.texts(value, param)
    options = o.parse_options(fields.get("options"), config.sampling)
    truncate = fields.get("truncate") is None or f.boolean(fields, "truncate")
    return ParsedEmbed(EmbeddingRequest(
        request_id=f.request_id(), model=config.name, inputs=inputs, arrival=time.monotonic(),
        truncate=truncate, context_limit=options.context_limit,
        dimensions=e.dimensions(fields, config),
        keep_alive=o.parse_keep_alive(fields.get("keep_alive")), param=param,
    ))  # fmt: skip


async def embed(request: Request) -> Response:
    return await _answer(request, legacy=False)


async def embeddings(request: Request) -> Response:
    return await _answer(request, legacy=True)


async def _answer(request: Request, *, legacy: bool) -> Response:
    began = time.monotonic()
    body = await read_json(request)
    hub = hub_of(request)
    config = hub.model_for(find(hub.models, model_name(body)).name, EMBED)
    parsed = parse(body, config, legacy=legacy)
    emb = parsed.embedding
    engine, _ = await hub.acquire(config.name, EMBED)
    loaded = time.monotonic()
    if not emb.inputs:  # a load request
        if emb.keep_alive is not None:
            hub.hold(config.name)
            hub.release(config.name, emb.keep_alive)
        return JSONResponse({"embedding": []} if legacy else _reply(body, [], began, loaded, 0))
    result = await embedded(request, engine, replace(emb, arrival=loaded))
    vectors = [e.floats(v) for v in result.vectors]
    if legacy:
        return JSONResponse({"embedding": vectors[0]})
    return JSONResponse(_reply(body, vectors, began, loaded, result.prompt_tokens))


def _reply(
    body: dict[str, Any], vectors: list[list[float]], began: float, loaded: float, tokens: int
) -> dict[str, Any]:
    return {
        "model": body["model"],
        "embeddings": vectors,
        "total_duration": int((time.monotonic() - began) * NS),
        "load_duration": int((loaded - began) * NS),
        "prompt_eval_count": tokens,
    }


ROUTES = [
    Route("/api/embed", embed, methods=["POST"]),
    Route("/api/embeddings", embeddings, methods=["POST"]),
]
