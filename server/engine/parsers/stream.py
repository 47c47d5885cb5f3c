"""A request's engine events with the model's text parsed: reasoning split from the
answer first, then the answer's tool calls read in the model's format. The finish
reason becomes ``tool_calls`` when the model called one; calls that did not parse or
match their tool's schema are counted in ``hearth_tool_call_parse_failures_total``."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import replace

from backends.base import Tool
from server.engine.inbox import RequestStream
from server.engine.metrics import Metrics
from server.engine.parsers.base import Parser, PlainText
from server.engine.parsers.calls import Piece
from server.engine.parsers.harmony import HarmonyParser
from server.engine.parsers.registry import reasoning_parser, tool_parser
from server.engine.requests import Accepted, Event, Failed, Finished, FinishReason, TextDelta

HARMONY = "harmony"


class OutputStream(RequestStream):
    """It wraps the engine's stream (and has no queue of its own). The reasoning parser
    is made at ``Accepted``, which says whether the prompt left the model inside its
    reasoning; a stream wrapped after that event was read is told by ``reasoning_open``.
    """

    def __init__(
        self,
        inner: RequestStream,
        *,
        tools: Sequence[Tool],
        metrics: Metrics,
        model: str,
        parallel: bool = True,
        reasoning_format: str | None = None,
        tool_format: str | None = "hermes",
        reasoning_open: bool = False,
    ) -> None:
        self.request_id = inner.request_id
        self.prompt_tokens = inner.prompt_tokens
        self._inner = inner
        self._tools, self._parallel = tuple(tools), parallel
        self._formats = (reasoning_format, tool_format)
        self._reasoning: Parser | None = None
        self._answer: Parser = PlainText()
        self._started = False  # text came: the parsers are set
        self._parsers(reasoning_open)
        self._ready: deque[Event] = deque()
        self._metrics, self._model = metrics, model
        self._counted = 0  # failures already counted

    def push(self, event: Event) -> None:
        self._inner.push(event)

    async def next(self) -> Event:
        while not self._ready:
            event = await self._inner.next()
            if isinstance(event, Accepted):
                self._parsers(event.reasoning_open)
                self._ready.append(event)
            elif isinstance(event, TextDelta):
                pieces = self._answer_of(self._read(event.text))
                if not pieces and not self._started:
                    # Text held back is still a first token (for the first-token limit).
                    pieces = [TextDelta("")]
                self._started = True
                self._ready.extend(pieces)
            elif isinstance(event, Finished):
                self._ready.extend(self._flush())
                self._count()
                if self._answer.calls and event.reason is FinishReason.STOP:
                    event = replace(event, reason=FinishReason.TOOL_CALLS)
                self._ready.append(event)
            else:
                if isinstance(event, Failed):
                    self._count()
                self._ready.append(event)
        return self._ready.popleft()

    def _parsers(self, reasoning_open: bool) -> None:
        """The parsers, made before the first text (again where ``Accepted`` says more)."""
        if self._started:
            return
        reasoning, tool = self._formats
        tools = self._tools if tool is not None else ()
        if HARMONY in self._formats:  # one parser for its reasoning and its calls
            harmony = HarmonyParser(tools, parallel=self._parallel, reasoning_open=reasoning_open)
            self._reasoning, self._answer = None, harmony
            return
        if reasoning is not None:
            self._reasoning = reasoning_parser(reasoning, reasoning_open=reasoning_open)
        if tool is not None and tools:
            self._answer = tool_parser(tool, tools, self._parallel)

    def _read(self, text: str) -> list[Piece]:
        if self._reasoning is None:
            return [TextDelta(text)] if text else []
        return self._reasoning.feed(text)

    def _answer_of(self, pieces: list[Piece]) -> list[Piece]:
        """The answer's text through the tool parser; reasoning as it is."""
        out: list[Piece] = []
        for piece in pieces:
            out += self._answer.feed(piece.text) if isinstance(piece, TextDelta) else [piece]
        return out

    def _flush(self) -> list[Piece]:
        held = self._reasoning.flush() if self._reasoning is not None else []
        return self._answer_of(held) + self._answer.flush()

    def _count(self) -> None:
        failures = self._answer.failures - self._counted
        if failures:
            name = "hearth_tool_call_parse_failures_total"
            self._metrics.inc(name, failures, model=self._model)
            self._counted += failures
