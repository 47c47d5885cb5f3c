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
from server.api.relay import Relay, start
from server.config import ModelConfig
from server.engine.handle import ModelEngine
from server.engine.requests import Failed, Finished, TextDelta, ToolCallDelta
from server.engine.toolcalls import ToolCallStream

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
    parsed = schemas.parse_messages(body, config.sampling, model=config.name)
    gen = parsed.generation
    stream, deadline = await start(request, engine, gen)
    prompt_tokens = stream.prompt_tokens
    if gen.tools:
        stream = ToolCallStream(
            stream, gen.tools, hub_of(request).metrics, gen.model, parallel=gen.parallel_tool_calls
        )
    message = render.Message("msg_" + gen.request_id, parsed.model, gen.stop)
    relay = Relay(request, engine, stream, deadline, gen, streamed=parsed.stream)
    if parsed.stream:
        return relay.stream(_events(relay, message, prompt_tokens))
    answer = await relay.collect()
    return JSONResponse(message.full(answer.text, answer.calls, answer.finished))


async def _events(relay: Relay, message: render.Message, prompt_tokens: int) -> AsyncGenerator[
    bytes, None
]:  # fmt: skip
    yield message.start(prompt_tokens)
    blocks = render.Blocks()
    async for item in relay.events_with_beats(PING_SECONDS):
        if item is None:
            yield render.event("ping", {})
        elif isinstance(item, TextDelta):
            yield blocks.text(item.text)
        elif isinstance(item, ToolCallDelta):
            yield blocks.call(item.call)
        elif isinstance(item, Finished):
            yield blocks.close() + message.end(item)
        elif isinstance(item, Failed):
            yield render.error_event(item.error)


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
