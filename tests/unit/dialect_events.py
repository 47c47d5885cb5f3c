"""One answer as the output parser delivers it, for every dialect's renderer:
reasoning, text, two tool calls whose arguments stream in pieces, and a third call that
comes whole (a parser that cannot stream that format)."""

from __future__ import annotations

from collections.abc import Iterable

from backends.base import ToolCall
from server.api.relay import Answer, Gathered
from server.engine.requests import (
    Admitted,
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

WEATHER = ToolCall("call_a", "get_weather", '{"city": "Paris"}')
TIME = ToolCall("call_b", "get_time", '{"zone": "CET"}')
WHOLE = ToolCall("call_c", "noop", "{}")
USAGE = Usage(prompt_tokens=30, completion_tokens=20, cached_tokens=10)
THOUGHT = "The user wants weather. Then time."

EVENTS: tuple[Event, ...] = (
    Admitted(10),
    TextDelta(""),  # what a parser holding text back sends first
    ReasoningDelta("The user wants weather."),
    ReasoningDelta(" Then time."),
    TextDelta("Checking."),
    ToolCallStarted(0, "call_a", "get_weather"),
    ToolCallArguments(0, '{"city": '),
    ToolCallArguments(0, '"Paris"'),
    ToolCallDelta(0, WEATHER),  # "}" is left to send
    ToolCallStarted(1, "call_b", "get_time"),
    ToolCallArguments(1, '{"zone": "CET"}'),
    ToolCallDelta(1, TIME),  # nothing left
    ToolCallDelta(2, WHOLE),  # never streamed
    Finished(FinishReason.TOOL_CALLS, USAGE),
)


def answer(events: Iterable[Event] = EVENTS) -> Answer:
    """The whole answer the events make, as a response sent whole gathers it."""
    gathered = Gathered()
    for event in events:
        done = gathered.add(event)
        if done is not None:
            return done
    raise AssertionError("no Finished event")
