"""A stream whose client stopped reading is cut at its deadline and its body closed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from starlette.types import Message

from server.api import timeouts
from server.api.timeouts import Deadline, TimedStreamingResponse


def test_a_blocked_send_is_cut_and_the_body_closed() -> None:
    closed = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        try:
            while True:
                yield b"data: x\n\n"
        finally:
            closed.set()

    async def receive() -> Message:
        await asyncio.Event().wait()  # the client never sends a disconnect
        raise AssertionError

    async def send(message: Message) -> None:
        if message["type"] == "http.response.body":
            await asyncio.Event().wait()  # the client never reads

    async def run() -> float:
        deadline = Deadline.__new__(Deadline)
        deadline.end = asyncio.get_running_loop().time() + 0.1
        response = TimedStreamingResponse(
            body(), deadline, media_type="text/event-stream", headers={}
        )
        started = time.monotonic()
        await response({"type": "http", "asgi": {"spec_version": "2.4"}}, receive, send)
        assert closed.is_set()
        return time.monotonic() - started

    elapsed = asyncio.run(run())
    assert elapsed < timeouts.SEND_GRACE_S + 2
