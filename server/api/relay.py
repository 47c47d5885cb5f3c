"""An accepted generation's events on their way to its HTTP response: what the
generation routes (chat, completions, ``/infill``) share around their own formatting;
and an embedding request's one answer (:func:`embedded`), under the same bookkeeping.

A route makes a :class:`Relay` once the engine has accepted the request and reads
``relay.events()`` into its response shape: a response sent whole calls ``relay.close()``
in a ``finally``; a streamed one is ``relay.stream(body)``, which closes the relay when
the response ends, even if its body never started. The relay turns a timeout into a
``Failed`` event, counts the request as in flight for the drain, writes the access-log
line, and drops the sequence when the response ends before the last event (the client
went away).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from backends.base import ToolCall
from server.api.timeouts import Deadline, TimedStreamingResponse
from server.engine.handle import ModelEngine
from server.engine.hub import ModelHub
from server.engine.inbox import RequestStream
from server.engine.parsers import OutputStream
from server.engine.requests import (
    Accepted,
    Embedded,
    EmbeddingRequest,
    EngineRequest,
    Event,
    Failed,
    Finished,
    GenerationRequest,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    ToolCallStarted,
    Usage,
)
from server.errors import HearthError, InternalError, RequestTimeout

access_log = logging.getLogger("hearth.requests")
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@dataclass(frozen=True, slots=True)
class Answer:
    """A whole answer: its text, its tool calls, how it finished, and its reasoning."""

    text: str
    calls: tuple[ToolCall, ...]
    finished: Finished
    reasoning: str = ""


class Gathered:
    """A whole answer's pieces, gathered event by event."""

    def __init__(self) -> None:
        self._text: list[str] = []
        self._reasoning: list[str] = []
        self._calls: list[ToolCall] = []

    def add(self, event: Event) -> Answer | None:
        """The answer once ``event`` ends it; a failure raises."""
        if isinstance(event, TextDelta):
            self._text.append(event.text)
        elif isinstance(event, ReasoningDelta):
            self._reasoning.append(event.text)
        elif isinstance(event, ToolCallDelta):  # streamed pieces end in the whole call
            self._calls.append(event.call)
        elif isinstance(event, Finished):
            text, reasoning = "".join(self._text), "".join(self._reasoning)
            return Answer(text, tuple(self._calls), event, reasoning)
        elif isinstance(event, Failed):
            raise event.error
        return None


class ClientGone(HearthError):
    status = 499
    type = "client_closed_request"


class Relay:
    def __init__(
        self,
        request: Request,
        engine: ModelEngine,
        stream: RequestStream,
        deadline: Deadline,
        gen: EngineRequest,
        *,
        streamed: bool,
    ) -> None:
        self._hub: ModelHub = request.app.state.hub
        self._engine = engine
        self._stream = stream
        self._deadline = deadline
        self._gen = gen
        self._streamed = streamed
        self.done = False  # the last event (Finished or Failed) has been read
        self.first_output: float | None = None  # time.monotonic() of the first text or call
        self._closed = False
        self._outcome = "client_gone"
        self._usage: Usage | None = None
        self._hub.inflight += 1
        self._hub.hold(gen.model)
        # A response sent whole watches for the client leaving, so its sequence is freed
        # at once; a streamed one notices when a write fails.
        self._watcher = (
            None if streamed else asyncio.create_task(self._abort_on_disconnect(request))
        )

    async def events(self) -> AsyncIterator[Event]:
        """The events up to and including the last one."""
        while not self.done:
            yield await self._next()

    async def collect(self) -> Answer:
        """A response sent whole: every event read, the text, reasoning and calls
        gathered; a failure raises. Closes the relay."""
        gathered = Gathered()
        try:
            async for event in self.events():
                answer = gathered.add(event)
                if answer is not None:
                    return answer
            raise InternalError("the request ended without a last event")
        finally:
            self.close()

    async def events_with_beats(self, idle: float) -> AsyncIterator[Event | None]:
        """The events, with ``None`` after every ``idle`` seconds without one (for a
        dialect's keep-alive: Anthropic's ``ping``)."""
        while not self.done:
            task = asyncio.ensure_future(self._next())
            try:
                while not (await asyncio.wait({task}, timeout=idle))[0]:
                    yield None
            finally:
                if not task.done():
                    task.cancel()
            yield task.result()

    async def _next(self) -> Event:
        try:
            event = await self._deadline.next(self._stream)
        except RequestTimeout as exc:
            event = Failed(exc)
        if isinstance(event, Accepted):  # only ever the first, which start() read
            event = Failed(InternalError("unexpected event order"))
        output = TextDelta | ReasoningDelta | ToolCallStarted | ToolCallDelta
        if isinstance(event, output) and self.first_output is None:
            self.first_output = time.monotonic()
        if isinstance(event, Finished):
            self.done = True
            self._outcome, self._usage = event.reason.value, event.usage
        elif isinstance(event, Embedded):
            self.done = True
            self._outcome, self._usage = "embedded", Usage(event.prompt_tokens, 0, 0)
        elif isinstance(event, Failed):
            self.done = True
            self._outcome = f"error:{event.error.code or event.error.status}"
        return event

    async def _abort_on_disconnect(self, request: Request) -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                self._engine.abort(self._stream.request_id)
                self._stream.push(Failed(ClientGone("the client disconnected")))
                return

    def stream(
        self, body: AsyncGenerator[bytes, None], media_type: str = "text/event-stream"
    ) -> Response:
        """The streamed response of ``body`` (SSE unless ``media_type`` says otherwise:
        Ollama's NDJSON); it closes this relay when it ends."""
        end, headers = self._deadline.end, SSE_HEADERS
        return TimedStreamingResponse(body, end, self.close, media_type=media_type, headers=headers)

    def close(self) -> None:
        """Leave the in-flight count, drop the sequence unless it ended, log the request;
        once, however many times it is called."""
        if self._closed:
            return
        self._closed = True
        if self._watcher is not None:
            self._watcher.cancel()
        if not self.done:
            self._engine.abort(self._stream.request_id)
        self._hub.inflight -= 1
        self._hub.release(self._gen.model, self._gen.keep_alive)
        record: dict[str, object] = {
            "id": self._gen.request_id,
            "model": self._gen.model,
            "stream": self._streamed,
            "outcome": self._outcome,
            "seconds": round(time.monotonic() - self._gen.arrival, 3),
        }
        if self._usage is not None:
            record |= {
                "prompt_tokens": self._usage.prompt_tokens,
                "cached_tokens": self._usage.cached_tokens,
                "completion_tokens": self._usage.completion_tokens,
            }
        access_log.info("%s", json.dumps(record))


async def start(
    request: Request, engine: ModelEngine, gen: EngineRequest
) -> tuple[RequestStream, Deadline]:
    """Submit ``gen`` and wait until the engine accepts it; a refusal raises here,
    before any response starts. A chat's events come parsed (see :func:`parsed`)."""
    deadline = Deadline(engine, gen, request.app.state.settings)
    stream = engine.submit(gen, asyncio.get_running_loop())
    if isinstance(gen, GenerationRequest):
        stream = parsed(request, engine, gen, stream)
    try:
        first = await deadline.next(stream)
    except asyncio.CancelledError:
        engine.abort(gen.request_id)
        raise
    if isinstance(first, Failed):
        raise first.error
    if isinstance(first, Accepted):
        stream.prompt_tokens = first.prompt_tokens
    return stream, deadline


def parsed(
    request: Request, engine: ModelEngine, gen: GenerationRequest, stream: RequestStream
) -> RequestStream:
    """A chat's text parsed in the model's own formats (its reasoning split from the
    answer, its tool calls read as they stream), wrapped before the first event, which
    says whether the prompt left the model inside its reasoning. A prompt's text (text
    completions, infill, a raw generate) stays as the model wrote it."""
    if gen.messages is None:
        return stream
    caps = engine.capabilities
    reasoning = caps.reasoning_format if caps is not None else None
    return OutputStream(
        stream, tools=gen.tools, metrics=request.app.state.hub.metrics, model=gen.model,
        parallel=gen.parallel_tool_calls, reasoning_format=reasoning,
        tool_format=tool_format(engine),
    )  # fmt: skip


async def embedded(request: Request, engine: ModelEngine, emb: EmbeddingRequest) -> Embedded:
    """Run an embedding request to its vectors; a refusal or failure raises. Held,
    timed, logged and dropped when the client leaves, as a generation sent whole."""
    stream, deadline = await start(request, engine, emb)
    relay = Relay(request, engine, stream, deadline, emb, streamed=False)
    try:
        async for event in relay.events():
            if isinstance(event, Embedded):
                return event
            if isinstance(event, Failed):
                raise event.error
        raise InternalError("the request ended without a last event")
    finally:
        relay.close()


def tool_format(engine: ModelEngine) -> str:
    """How the model writes tool calls: Hermes' ``<tool_call>`` where nothing says."""
    caps = engine.capabilities
    return (caps.tool_format if caps is not None else None) or "hermes"
