"""A streamed request for a model that is not loaded yet: its response starts at once
and sends the dialect's keep-alive while the model loads, so a proxy with an idle
timeout does not cut it; then the route's own stream follows in the same response.

A request sent whole waits for the load before its response, as any slow request.
An error once the stream started (the load failed, the request is invalid for the
model) is the dialect's error event, as after any stream start.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from backends.base import GENERATE
from server.api.body import hub_of
from server.api.relay import SSE_HEADERS
from server.config import ModelConfig
from server.engine.handle import ModelEngine
from server.errors import HearthError

KEEP_ALIVE_SECONDS = 5.0
Handler = Callable[[ModelEngine, ModelConfig], Awaitable[Response]]


async def when_loaded(
    request: Request,
    name: str,
    streamed: bool,
    handler: Handler,
    *,
    keep_alive: bytes,
    error_event: Callable[[HearthError], bytes],
) -> Response:
    """``handler(engine, config)`` for model ``name``, a model that generates, loading
    it first if needed."""
    hub = hub_of(request)
    # An unknown model, an embedding model, a refused load: an HTTP error.
    await hub.start_load(name, GENERATE)
    if not streamed or hub.is_loaded(name):
        engine, config = await hub.acquire(name, GENERATE)
        return await handler(engine, config)
    return _StreamAfterLoad(hub.acquire(name, GENERATE), handler, keep_alive, error_event)


class _StreamAfterLoad(Response):
    def __init__(
        self,
        load: Awaitable[tuple[ModelEngine, ModelConfig]],
        handler: Handler,
        keep_alive: bytes,
        error_event: Callable[[HearthError], bytes],
    ) -> None:
        super().__init__(media_type="text/event-stream", headers=SSE_HEADERS)
        # The body is sent in parts of unknown total length: no Content-Length: 0.
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]
        self._load = load
        self._handler = handler
        self._keep_alive = keep_alive
        self._error_event = error_event

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        task = asyncio.ensure_future(self._load)
        try:
            while not (await asyncio.wait({task}, timeout=KEEP_ALIVE_SECONDS))[0]:
                await send(
                    {"type": "http.response.body", "body": self._keep_alive, "more_body": True}
                )
            inner = await self._handler(*task.result())
        except HearthError as exc:
            await send({"type": "http.response.body", "body": self._error_event(exc)})
            return
        finally:
            task.cancel()

        async def forward(message: Message) -> None:
            if message["type"] != "http.response.start":  # already sent
                await send(message)

        await inner(scope, receive, forward)


def is_streamed(body: Any) -> bool:
    return isinstance(body, dict) and body.get("stream") is True
