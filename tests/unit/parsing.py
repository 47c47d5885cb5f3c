"""Helpers for the output parsers' tests: run a model's text through an OutputStream,
whole or cut into pieces, and sum up what came out."""

from __future__ import annotations

import json
from collections.abc import Coroutine, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from backends.base import Tool
from server.engine.metrics import Metrics
from server.engine.parsers import OutputStream
from server.engine.requests import (
    Accepted,
    Event,
    Finished,
    FinishReason,
    ReasoningDelta,
    TextDelta,
    ToolCallArguments,
    ToolCallDelta,
    ToolCallStarted,
    Usage,
)

WEATHER = Tool(
    "get_weather",
    "The weather in a city",
    json.dumps(
        {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"enum": ["c", "f"]},
                "days": {"type": "integer"},
            },
            "required": ["city"],
        }
    ),
)
WRITE = Tool(
    "write_file",
    "Write a file",
    json.dumps(
        {
            "type": "object",
            "properties": {
                "path": {"type": "string"},
                "content": {"type": "string"},
                "overwrite": {"type": "boolean"},
                "mode": {"type": "object"},
            },
            "required": ["path", "content"],
        }
    ),
)
TOOLS = (WEATHER, WRITE)
USAGE = Usage(1, 1, 0)


@dataclass(frozen=True)
class Result:
    """What a stream gave: content, reasoning, the calls (name, arguments), how it
    finished and the failures counted."""

    content: str
    reasoning: str
    calls: tuple[tuple[str, str], ...]
    reason: FinishReason
    failures: float


class Canned:
    """An engine's stream that has every event already."""

    def __init__(self, events: Sequence[Event]) -> None:
        self.request_id = "r"
        self.prompt_tokens = 0
        self._events = list(events)

    def push(self, event: Event) -> None:
        self._events.append(event)

    async def next(self) -> Event:
        return self._events.pop(0)


def drive(coro: Coroutine[Any, Any, Event]) -> Event:
    """Run a coroutine that never waits (the canned stream has every event)."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    raise AssertionError("the stream waited")


def events(
    chunks: Sequence[str],
    *,
    tools: Sequence[Tool] = TOOLS,
    reasoning_format: str | None = None,
    tool_format: str | None = "hermes",
    reasoning_open: bool = False,
    parallel: bool = True,
    metrics: Metrics | None = None,
    reason: FinishReason = FinishReason.STOP,
) -> list[Event]:
    texts = [TextDelta(c) for c in chunks]
    inner = Canned([Accepted(1, reasoning_open), *texts, Finished(reason, USAGE)])
    stream = OutputStream(
        inner,  # type: ignore[arg-type]
        tools=tools,
        metrics=metrics or Metrics(),
        model="m",
        parallel=parallel,
        reasoning_format=reasoning_format,
        tool_format=tool_format,
    )
    out = []
    while not out or not isinstance(out[-1], Finished):
        out.append(drive(stream.next()))
    return out


def summary(out: Sequence[Event]) -> Result:
    """The stream's result; it checks the call events' order and that the streamed
    arguments begin the final ones."""
    started: dict[int, ToolCallStarted] = {}
    streamed: dict[int, str] = {}
    calls = []
    for event in out:
        if isinstance(event, ToolCallStarted):
            assert event.index == len(calls) and event.index not in started
            started[event.index] = event
        elif isinstance(event, ToolCallArguments):
            assert event.index in started and event.text
            streamed[event.index] = streamed.get(event.index, "") + event.text
        elif isinstance(event, ToolCallDelta):
            assert event.index == len(calls)
            if event.index in started:
                assert event.call.id == started[event.index].id
                assert event.call.name == started[event.index].name
            assert event.call.arguments.startswith(streamed.get(event.index, ""))
            calls.append((event.call.name, event.call.arguments))
    content = "".join(e.text for e in out if isinstance(e, TextDelta))
    reasoning = "".join(e.text for e in out if isinstance(e, ReasoningDelta))
    end = out[-1]
    assert isinstance(end, Finished)
    return Result(content, reasoning, tuple(calls), end.reason, 0.0)


def run(text: str, chunks: Sequence[str] | None = None, **options: Any) -> Result:
    metrics = Metrics()
    out = events(chunks if chunks is not None else [text], metrics=metrics, **options)
    result = summary(out)
    failures = metrics.get("hearth_tool_call_parse_failures_total", model="m")
    return Result(result.content, result.reasoning, result.calls, result.reason, failures)


def cuts(text: str) -> Iterator[list[str]]:
    """The text one character at a time, in two pieces at every boundary, and in three
    pieces at a spread of boundary pairs."""
    yield list(text)
    for i in range(1, len(text)):
        yield [text[:i], text[i:]]
    for i in range(1, len(text), 7):
        for j in range(i + 1, len(text), 11):
            yield [text[:i], text[i:j], text[j:]]


def same_when_cut(text: str, **options: Any) -> Result:
    """The result of the whole text, after checking that every cut of it gives the same."""
    whole = run(text, **options)
    for chunks in cuts(text):
        assert run(text, chunks, **options) == whole, chunks
    return whole
