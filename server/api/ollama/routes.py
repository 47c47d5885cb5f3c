"""``POST /api/chat`` and ``/api/generate``: Ollama's generation API over the same engine
as chat completions; ``/api/version``, and ``GET /``, which Ollama's clients probe. Errors
on ``/api/*`` have Ollama's shape (:func:`server.api.ollama.render.error_body`, chosen
by path in server.api.dialects)."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import replace
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from backends.base import GENERATE
from server.api.body import hub_of, read_json
from server.api.ollama import render, schemas
from server.api.ollama.catalogue import find
from server.api.relay import Relay, start
from server.engine.hub import ModelHub
from server.engine.requests import Failed, Finished

# The Ollama release whose API this follows; clients compare it to enable features.
OLLAMA_VERSION = "0.12.0"


async def chat(request: Request) -> Response:
    return await _answer(request, schemas.parse_chat, chat=True)


async def generate(request: Request) -> Response:
    return await _answer(request, schemas.parse_generate, chat=False)


async def _answer(
    request: Request, parse: Callable[..., schemas.Parsed], *, chat: bool
) -> Response:
    """Parsed before the model is acquired: a bad request never loads a model. A model
    not loaded yet loads first (the response waits: Ollama's NDJSON has no keep-alive
    line), and that wait is the answer's load_duration."""
    began = time.monotonic()
    body = await read_json(request)
    hub = hub_of(request)
    config = find(hub.models, schemas.model_name(body))
    parsed = parse(body, config.sampling, model=config.name)
    if parsed.generation is None:
        return JSONResponse(await _load_only(hub, config.name, parsed, chat))
    engine, _ = await hub.acquire(config.name, GENERATE)
    loaded = time.monotonic()
    gen = replace(parsed.generation, arrival=loaded)  # its timeouts start once it can run
    stream, deadline = await start(request, engine, gen)
    reply = render.Reply(parsed.model, chat, began, loaded)
    relay = Relay(request, engine, stream, deadline, gen, streamed=parsed.stream)
    if parsed.stream:
        return relay.stream(_lines(relay, reply), render.MEDIA_TYPE)
    a = await relay.collect()
    return JSONResponse(reply.last(a.finished, relay.first_output, a.text, a.calls, a.reasoning))


async def _load_only(
    hub: ModelHub, name: str, parsed: schemas.Parsed, chat: bool
) -> dict[str, Any]:
    """Ollama's load request (no prompt, no messages), or with keep_alive 0 its unload
    request: the model unloads now unless it serves requests (then 503)."""
    now = time.monotonic()
    reply = render.Reply(parsed.model, chat, now, now)
    if parsed.keep_alive == 0:
        hub.unload(name)
        return reply.done_only("unload")
    await hub.acquire(name)
    if parsed.keep_alive is not None:  # how long it stays once idle, from now
        hub.hold(name)
        hub.release(name, parsed.keep_alive)
    return reply.done_only("load")


async def _lines(relay: Relay, reply: render.Reply) -> AsyncGenerator[bytes, None]:
    async for event in relay.events():
        if isinstance(event, Finished):
            yield render.line(reply.last(event, relay.first_output))
        elif isinstance(event, Failed):
            yield render.error_line(event.error)
        elif out := reply.feed(event):
            yield out


async def version(request: Request) -> Response:
    return JSONResponse({"version": OLLAMA_VERSION})


async def root(request: Request) -> Response:
    return PlainTextResponse("Ollama is running")


ROUTES = [
    Route("/", root, methods=["GET", "HEAD"]),
    Route("/api/chat", chat, methods=["POST"]),
    Route("/api/generate", generate, methods=["POST"]),
    Route("/api/version", version, methods=["GET"]),
]
