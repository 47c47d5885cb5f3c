"""``POST /api/chat`` and ``/api/generate``: Ollama's generation API over the same engine
as chat completions; ``/api/version``, and ``GET /``, which Ollama's clients probe. Errors
on ``/api/*`` have Ollama's shape (:func:`server.api.ollama.render.error_body`, chosen
by path in server.api.dialects)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from server.api.body import hub_of, read_json
from server.api.ollama import render, schemas
from server.api.ollama.catalogue import find
from server.api.relay import Relay, start
from server.engine.requests import Failed, Finished, TextDelta, ToolCallDelta
from server.engine.toolcalls import ToolCallStream

# The Ollama release whose API this follows; clients compare it to enable features.
OLLAMA_VERSION = "0.12.0"


async def chat(request: Request) -> Response:
    return await _answer(request, schemas.parse_chat, chat=True)


async def generate(request: Request) -> Response:
    return await _answer(request, schemas.parse_generate, chat=False)


async def _answer(
    request: Request, parse: Callable[..., schemas.Parsed], *, chat: bool
) -> Response:
    body = await read_json(request)
    hub = hub_of(request)
    engine, config = await hub.acquire(find(hub.models, schemas.model_name(body)).name)
    parsed = parse(body, config.sampling, model=config.name)
    gen = parsed.generation
    if gen is None:
        return JSONResponse(render.Reply(parsed.model, chat, 0.0).loaded())
    stream, deadline = await start(request, engine, gen)
    if gen.tools:
        stream = ToolCallStream(
            stream, gen.tools, hub.metrics, gen.model, parallel=gen.parallel_tool_calls
        )
    reply = render.Reply(parsed.model, chat, gen.arrival)
    relay = Relay(request, engine, stream, deadline, gen, streamed=parsed.stream)
    if parsed.stream:
        return relay.stream(_lines(relay, reply), render.MEDIA_TYPE)
    answer = await relay.collect()
    return JSONResponse(reply.last(answer.finished, relay.first_output, answer.text, answer.calls))


async def _lines(relay: Relay, reply: render.Reply) -> AsyncGenerator[bytes, None]:
    async for event in relay.events():
        if isinstance(event, TextDelta):
            yield reply.part(event.text)
        elif isinstance(event, ToolCallDelta):
            yield reply.call(event.index, event.call)
        elif isinstance(event, Finished):
            yield render.line(reply.last(event, relay.first_output))
        elif isinstance(event, Failed):
            yield render.error_line(event.error)


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
