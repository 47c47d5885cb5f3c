"""HTTP routes: parse at the boundary, hand work to an engine, format what comes back."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from backends.base import ToolCall
from server import schemas
from server.engine import Engine
from server.errors import InternalError, InvalidRequest, ModelUnavailable
from server.hub import ModelHub
from server.inbox import RequestStream
from server.relay import Relay
from server.requests import (
    Failed,
    Finished,
    GenerationRequest,
    TextDelta,
    ToolCallDelta,
)
from server.responses import DONE, Shape, sse_error
from server.timeouts import Deadline, TimedStreamingResponse
from server.toolcalls import ToolCallStream

MAX_BODY_BYTES = 8 * 1024 * 1024


class RequestTooLarge(InvalidRequest):
    status = 413
    default_code = "request_too_large"

    def headers(self) -> dict[str, str]:
        # Closing the connection stops the server reading (and discarding) the rest.
        return {**super().headers(), "Connection": "close"}


async def read_json(request: Request) -> Any:
    """The body as JSON; 413 for a declared or streamed body over MAX_BODY_BYTES,
    before more than that is read."""
    declared = request.headers.get("content-length", "")
    if len(declared) > 18 or (declared.isdigit() and int(declared) > MAX_BODY_BYTES):
        raise RequestTooLarge(f"the request body exceeds {MAX_BODY_BYTES} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise RequestTooLarge(f"the request body exceeds {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks))
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, an int of 4,300+ digits
        raise InvalidRequest(f"the request body is not valid JSON: {exc}") from exc
    except RecursionError as exc:  # "[[[[..." deeper than the parser's stack
        raise InvalidRequest("the request body is nested too deeply") from exc


def _hub(request: Request) -> ModelHub:
    hub: ModelHub = request.app.state.hub
    return hub


async def chat_completions(request: Request) -> Response:
    body = await read_json(request)
    engine, config = _hub(request).engine_for(schemas.model_name(body))
    parsed = schemas.parse_chat(
        body, config.sampling, model=config.name, vocab_size=engine.vocab_size
    )
    return await _generate(request, engine, parsed, chat=True)


async def completions(request: Request) -> Response:
    body = await read_json(request)
    engine, config = _hub(request).engine_for(schemas.model_name(body))
    parsed = schemas.parse_completion(body, config.sampling, model=config.name)
    return await _generate(request, engine, parsed, chat=False)


async def start(
    request: Request, engine: Engine, gen: GenerationRequest
) -> tuple[RequestStream, Deadline]:
    """Submit ``gen`` and wait until the engine accepts it; a refusal raises here,
    before any response starts."""
    deadline = Deadline(engine, gen, request.app.state.settings)
    stream = engine.submit(gen, asyncio.get_running_loop())
    try:
        first = await deadline.next(stream)
    except asyncio.CancelledError:
        engine.abort(gen.request_id)
        raise
    if isinstance(first, Failed):
        raise first.error
    return stream, deadline


async def _generate(
    request: Request, engine: Engine, parsed: schemas.ParsedRequest, *, chat: bool
) -> Response:
    gen = parsed.generation
    stream, deadline = await start(request, engine, gen)
    if gen.tools:
        stream = ToolCallStream(stream, gen.tools, _hub(request).metrics, gen.model)
    shape = Shape.for_request(gen.request_id, gen.model, chat=chat)
    relay = Relay(request, engine, stream, deadline, gen, streamed=parsed.stream)
    if parsed.stream:
        events = _sse(relay, shape, parsed.include_usage)
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return TimedStreamingResponse(
            events, deadline, media_type="text/event-stream", headers=headers
        )
    return await _collect(relay, shape)


async def _sse(relay: Relay, shape: Shape, include_usage: bool) -> AsyncIterator[bytes]:
    """The SSE body. If the client leaves, the generator is closed and the sequence freed."""
    try:
        yield shape.chunk("", role=True)
        async for event in relay.events():
            if isinstance(event, TextDelta):
                yield shape.chunk(event.text)
            elif isinstance(event, ToolCallDelta):
                yield shape.tool_call_chunks(event.index, event.call)
            elif isinstance(event, Finished):
                yield shape.chunk(None, event.reason.value)
                if include_usage:
                    yield shape.usage_chunk(event.usage)
            elif isinstance(event, Failed):
                yield sse_error(event.error)
        yield DONE
    finally:
        relay.close()


async def _collect(relay: Relay, shape: Shape) -> Response:
    parts: list[str] = []
    calls: list[ToolCall] = []
    try:
        async for event in relay.events():
            if isinstance(event, TextDelta):
                parts.append(event.text)
            elif isinstance(event, ToolCallDelta):
                calls.append(event.call)
            elif isinstance(event, Finished):
                body = shape.full("".join(parts), event.reason.value, event.usage, calls)
                return JSONResponse(body)
            elif isinstance(event, Failed):
                raise event.error
        raise InternalError("the request ended without a last event")
    finally:
        relay.close()


async def tokenize(request: Request) -> Response:
    """llama-server's shape: {"model", "content", "add_special"} -> {"tokens": [...]}."""
    body = await read_json(request)
    engine, _ = _hub(request).engine_for(schemas.model_name(body))
    content, add_special = schemas.parse_tokenize(body)
    tokens = await asyncio.wrap_future(
        engine.call(lambda backend: backend.tokenize(content, add_special=add_special))
    )
    return JSONResponse({"tokens": tokens, "count": len(tokens)})


async def detokenize(request: Request) -> Response:
    body = await read_json(request)
    engine, _ = _hub(request).engine_for(schemas.model_name(body))
    tokens = schemas.parse_detokenize(body, engine.vocab_size)
    text = await asyncio.wrap_future(engine.call(lambda backend: backend.detokenize(tokens)))
    return JSONResponse({"content": text})


async def list_models(request: Request) -> Response:
    return JSONResponse({"object": "list", "data": _hub(request).describe()})


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def ready(request: Request) -> Response:
    """Readiness: every model to serve is loaded and its engine alive."""
    hub = _hub(request)
    if not hub.ready():
        raise ModelUnavailable("not ready: " + hub.not_ready_reason(), retry_after=5)
    return JSONResponse({"status": "ready"})


async def metrics(request: Request) -> Response:
    text = _hub(request).metrics.render()
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4")


ROUTES = [
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/completions", completions, methods=["POST"]),
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/tokenize", tokenize, methods=["POST"]),
    Route("/detokenize", detokenize, methods=["POST"]),
    Route("/health", health, methods=["GET"]),
    Route("/health/ready", ready, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]
