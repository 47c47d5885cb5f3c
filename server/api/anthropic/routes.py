"""``POST /v1/messages`` and ``/v1/messages/count_tokens``: Anthropic's Messages API over
the same engine as chat completions. Errors on these paths have Anthropic's shape
(:func:`server.api.anthropic.render.error_body`, chosen by path in server.api.app)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from server.api.anthropic import render, schemas
from server.api.body import hub_of, read_json
from server.api.loading import is_streamed, when_loaded
from server.api.relay import Relay, start, tool_format
from server.config import ModelConfig
from server.engine.handle import ModelEngine
from server.engine.requests import Failed, Finished

PING_SECONDS = 10.0  # while a long prompt prefills, so proxies and clients keep the stream


async def messages(request: Request) -> Response:
    body = await read_json(request)

    async def handle(engine: ModelEngine, config: ModelConfig) -> Response:
        return await _messages(request, body, engine, config)

    return await when_loaded(
        request, schemas.model_name(body), is_streamed(body), handle,
        keep_alive=render.event("ping", {}), error_event=render.error_event,
    )  # fmt: skip


async def _messages(request: Request, body: Any, engine: ModelEngine, config: ModelConfig) -> (
    Response
):  # fmt: skip
    parsed = schemas.parse_messages(
        body, config.sampling, model=config.name, tool_format=tool_format(engine)
    )
    gen = parsed.generation
    stream, deadline = await start(request, engine, gen)
    message = render.Message("msg_" + gen.request_id, parsed.model, parsed.stop_sequences)
    relay = Relay(request, engine, stream, deadline, gen, streamed=parsed.stream)
    if parsed.stream:
        blocks = render.Blocks(parsed.show_thinking)
        return relay.stream(_events(relay, message, blocks, stream.prompt_tokens))
    return JSONResponse(message.full(await relay.collect(), parsed.show_thinking))


async def _events(
    relay: Relay, message: render.Message, blocks: render.Blocks, prompt_tokens: int
) -> AsyncGenerator[bytes, None]:
    yield message.start(prompt_tokens)
    async for item in relay.events_with_beats(PING_SECONDS):
        if item is None:
            yield render.event("ping", {})
        elif isinstance(item, Finished):
            yield blocks.close() + message.end(item)
        elif isinstance(item, Failed):
            yield render.error_event(item.error)
        elif out := blocks.feed(item):
            yield out


async def count_tokens(request: Request) -> Response:
    body = await read_json(request)
    engine, _ = await hub_of(request).acquire(schemas.model_name(body))
    conversation, tools = schemas.parse_count(body)
    tokens = await asyncio.wrap_future(engine.invoke("chat_prompt", conversation, tools))
    return JSONResponse({"input_tokens": len(tokens)})


ROUTES = [
    Route("/v1/messages", messages, methods=["POST"]),
    Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
]
