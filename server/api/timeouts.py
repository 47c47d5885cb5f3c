"""Per-request time limits: the whole request, and the wait to be admitted.

The second bounds a request stuck in the queue: once it is admitted (its prefill has
started), only the whole-request limit applies, so an agent's 20,000-token prompt that
takes minutes to prefill on a CPU is not cut while it makes progress; an engine that
stops making progress is a runner the watchdog replaces.

A request that runs past either ends: a 504 before the response started, a final SSE
error event after it, and in both cases its sequence is aborted. A client that stops
reading a stream blocks the send, not the engine: :class:`TimedStreamingResponse`
bounds the send as well, so a stalled client cannot hold a sequence past the limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Callable

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from server.engine.handle import ModelEngine
from server.engine.inbox import RequestStream
from server.engine.requests import Accepted, EngineRequest, Event
from server.errors import RequestTimeout
from server.settings import Settings

log = logging.getLogger("hearth.timeouts")
# A stream whose send is still blocked this long after the deadline is cut.
SEND_GRACE_S = 2.0


class Deadline:
    """The clock of one request; ``next`` is ``stream.next`` under the request's limits."""

    def __init__(self, engine: ModelEngine, gen: EngineRequest, settings: Settings) -> None:
        self._engine = engine
        self._request_id = gen.request_id
        # A request's arrival is time.monotonic(), which the event loop's clock is.
        self.end = gen.arrival + settings.request_timeout
        self._first_end = gen.arrival + settings.first_token_timeout
        self._request_timeout = settings.request_timeout
        self._first_token_timeout = settings.first_token_timeout
        self._started = False

    async def next(self, stream: RequestStream) -> Event:
        """The next event; on expiry the sequence is aborted and RequestTimeout raised."""
        first = not self._started and self._first_end < self.end
        try:
            async with asyncio.timeout_at(self._first_end if first else self.end):
                event = await stream.next()
        except TimeoutError:
            self._engine.abort(self._request_id)
            raise self._error(first) from None
        if not isinstance(event, Accepted):  # admitted, text, a call, the end, an error
            self._started = True
        return event

    def _error(self, first: bool) -> RequestTimeout:
        if first:
            return RequestTimeout(
                f"not admitted within {self._first_token_timeout:g} s: the model was busy "
                "(HEARTH_FIRST_TOKEN_TIMEOUT)",
                code="first_token_timeout",
            )
        return RequestTimeout(
            f"the request ran past {self._request_timeout:g} s (HEARTH_REQUEST_TIMEOUT)"
        )


class TimedStreamingResponse(StreamingResponse):
    """A stream cut ``SEND_GRACE_S`` after ``end`` even while a send is blocked on a
    client that stopped reading, which calls ``on_close`` however it ends.

    The response, not its body, is what surely ends: a client gone before the first
    chunk can end it before the body generator ever runs (an ASGI 2.4 server's send
    raises; a task cancelled while its first send waits), and then the body's own
    ``finally`` never runs.
    """

    def __init__(
        self,
        content: AsyncGenerator[bytes, None],
        end: float,
        on_close: Callable[[], None],
        *,
        media_type: str,
        headers: dict[str, str],
    ) -> None:
        super().__init__(content, media_type=media_type, headers=headers)
        self._body = content
        self._end = end + SEND_GRACE_S
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with asyncio.timeout_at(self._end):
                await super().__call__(scope, receive, send)
        except TimeoutError:
            log.warning("a stream's client stopped reading; cut at the request timeout")
        finally:
            self._on_close()  # first: closing the body may await, and be cancelled
            with contextlib.suppress(Exception):
                await self._body.aclose()
