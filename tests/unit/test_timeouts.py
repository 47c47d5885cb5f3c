"""A stream whose client stopped reading is cut at its deadline and its body closed; a
stream's ``on_close`` runs however the response ends."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator

from starlette.requests import ClientDisconnect
from starlette.types import Message

from server.api import timeouts
from server.api.timeouts import TimedStreamingResponse


async def endless() -> AsyncGenerator[bytes, None]:
    while True:
        yield b"data: x\n\n"


async def never() -> Message:
    await asyncio.Event().wait()  # the client never sends a disconnect
    raise AssertionError


def test_a_blocked_send_is_cut_and_the_body_closed() -> None:
    closed = asyncio.Event()

    async def body() -> AsyncGenerator[bytes, None]:
        try:
            async for chunk in endless():
                yield chunk
        finally:
            closed.set()

    async def send(message: Message) -> None:
        if message["type"] == "http.response.body":
            await asyncio.Event().wait()  # the client never reads

    async def run() -> tuple[float, int]:
        ended: list[str] = []
        end = asyncio.get_running_loop().time() + 0.1
        response = TimedStreamingResponse(
            body(), end, lambda: ended.append("x"), media_type="text/event-stream", headers={}
        )
        started = time.monotonic()
        await response({"type": "http", "asgi": {"spec_version": "2.4"}}, never, send)
        assert closed.is_set()
        return time.monotonic() - started, len(ended)

    elapsed, closes = asyncio.run(run())
    assert elapsed < timeouts.SEND_GRACE_S + 2
    assert closes == 1


def test_on_close_runs_when_the_response_ends_before_its_body_starts() -> None:
    """An ASGI 2.4 server raises on the first send to a client that has left."""

    async def gone(message: Message) -> None:
        raise ConnectionResetError

    async def run() -> int:
        ended: list[str] = []
        end = asyncio.get_running_loop().time() + 60
        response = TimedStreamingResponse(
            endless(), end, lambda: ended.append("x"), media_type="text/event-stream", headers={}
        )
        with contextlib.suppress(ClientDisconnect):
            await response({"type": "http", "asgi": {"spec_version": "2.4"}}, never, gone)
        return len(ended)

    assert asyncio.run(run()) == 1
