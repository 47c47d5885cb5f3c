"""HTTP routes: parse at the boundary, hand work to an engine, format what comes back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from server.api.body import hub_of, read_json
from server.api.loading import Handler, is_streamed, when_loaded
from server.api.openai import schemas
from server.api.openai.render import DONE, Chunks, Shape, sse_error
from server.api.relay import Relay, start, tool_format
from server.config import ModelConfig
from server.engine.handle import ModelEngine
from server.errors import HearthError


async def chat_completions(request: Request) -> Response:
    body = await read_json(request)

    async def handle(engine: ModelEngine, config: ModelConfig) -> Response:
        parsed = schemas.parse_chat(
            body, config.sampling, model=config.name, vocab_size=engine.vocab_size,
            tool_format=tool_format(engine),
        )  # fmt: skip
        return await _generate(request, engine, parsed, chat=True)

    return await _when_loaded(request, body, handle)


async def completions(request: Request) -> Response:
    body = await read_json(request)

    async def handle(engine: ModelEngine, config: ModelConfig) -> Response:
        parsed = schemas.parse_completion(body, config.sampling, model=config.name)
        return await _generate(request, engine, parsed, chat=False)

    return await _when_loaded(request, body, handle)


async def _when_loaded(request: Request, body: Any, handle: Handler) -> Response:
    return await when_loaded(
        request, schemas.model_name(body), is_streamed(body), handle,
        keep_alive=b": loading the model\n\n", error_event=_sse_error_done,
    )  # fmt: skip


def _sse_error_done(error: HearthError) -> bytes:
    return sse_error(error) + DONE


async def _generate(
    request: Request, engine: ModelEngine, parsed: schemas.ParsedRequest, *, chat: bool
) -> Response:
    gen = parsed.generation
    stream, deadline = await start(request, engine, gen)
    shape = Shape.for_request(gen.request_id, gen.model, chat=chat)
    relay = Relay(request, engine, stream, deadline, gen, streamed=parsed.stream)
    if parsed.stream:
        return relay.stream(_sse(relay, Chunks(shape, parsed.include_usage)))
    answer = await relay.collect()
    end = answer.finished
    return JSONResponse(
        shape.full(answer.text, end.reason.value, end.usage, answer.calls, answer.reasoning)
    )


async def _sse(relay: Relay, chunks: Chunks) -> AsyncGenerator[bytes, None]:
    """The SSE body; the response closes the relay (see Relay.stream)."""
    yield chunks.start()
    async for event in relay.events():
        if out := chunks.feed(event):
            yield out
    yield DONE


async def tokenize(request: Request) -> Response:
    """llama-server's shape: {"model", "content", "add_special"} -> {"tokens": [...]}."""
    body = await read_json(request)
    engine, _ = await hub_of(request).acquire(schemas.model_name(body))
    content, add_special = schemas.parse_tokenize(body)
    tokens = await asyncio.wrap_future(engine.invoke("tokenize", content, add_special=add_special))
    return JSONResponse({"tokens": tokens, "count": len(tokens)})


async def detokenize(request: Request) -> Response:
    body = await read_json(request)
    engine, _ = await hub_of(request).acquire(schemas.model_name(body))
    tokens = schemas.parse_detokenize(body, engine.vocab_size)
    text = await asyncio.wrap_future(engine.invoke("detokenize", tokens))
    return JSONResponse({"content": text})


async def list_models(request: Request) -> Response:
    return JSONResponse({"object": "list", "data": hub_of(request).describe()})


ROUTES = [
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/completions", completions, methods=["POST"]),
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/tokenize", tokenize, methods=["POST"]),
    Route("/detokenize", detokenize, methods=["POST"]),
]
