"""What crosses into an engine thread (its inbox commands) and out of it (a request's
stream of events). Commands are put on a ``queue.Queue`` by any thread; a stream's
events are handed to the HTTP side's event loop with ``loop.call_soon_threadsafe``."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from backends.base import Backend
from server.engine.requests import EngineRequest, Event, EventSink


class RequestStream:
    """The HTTP side's end of one request: events in order, ending in Finished/Failed."""

    def __init__(self, request_id: str, loop: asyncio.AbstractEventLoop) -> None:
        self.request_id = request_id
        self._loop = loop
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        self.prompt_tokens = 0  # set once the engine has accepted the request

    def push(self, event: Event) -> None:
        """Called from the engine thread."""
        # RuntimeError: the event loop is gone, so nobody is listening.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._queue.put_nowait, event)

    async def next(self) -> Event:
        return await self._queue.get()


@dataclass(frozen=True, slots=True)
class Submit:
    request: EngineRequest
    stream: EventSink


@dataclass(frozen=True, slots=True)
class Prepared:
    """A submitted request after its prompt was rendered and tokenized (off the step
    loop): the future holds ``prepare``'s result or its exception."""

    submit: Submit
    seq_id: int
    future: concurrent.futures.Future[Any]


@dataclass(frozen=True, slots=True)
class Abort:
    request_id: str


@dataclass(frozen=True, slots=True)
class Call:
    fn: Callable[[Backend], Any]
    future: concurrent.futures.Future[Any]


@dataclass(frozen=True, slots=True)
class CancelAll:
    message: str


STOP = object()
