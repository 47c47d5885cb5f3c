"""Hermes and Qwen2.5 (and Qwen3's) calls: ``<tool_call>\\n{"name": ..., "arguments":
{...}}\\n</tool_call>``; text outside the tags stays content.

A small model sometimes writes the call's JSON alone, without the tags, or in a ```json
fence: an answer that starts with ``{`` or ```json is therefore held back to its end
and taken as calls if it is a sequence of calls (apart by white space or commas, as a
small model writes several at once), each ``{"name": <an offered tool>, "arguments":
...}``; else it is content.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence

from backends.base import Tool
from server.engine.parsers.base import ForcedCall, Region, TaggedParser, call_objects
from server.engine.parsers.calls import Piece
from server.engine.parsers.jsontext import CallObject, TaggedCall

CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
CALL_END = CALL_CLOSE
FENCE = "```json"


class HermesParser(TaggedParser):
    """Calls in ``<tool_call>`` tags, and a bare or fenced JSON answer (above)."""

    opens = (CALL_OPEN,)

    def __init__(self, tools: Sequence[Tool], *, parallel: bool = True) -> None:
        super().__init__(tools, parallel=parallel)
        self._names = {t.name for t in tools}
        self._bare: bool | None = None  # the answer is held to its end; None: not told yet

    def region(self, tag: str) -> tuple[Region | None, str | None]:
        return TaggedCall(self._calls), CALL_CLOSE

    def feed(self, text: str) -> list[Piece]:
        if self._bare is None:
            self._buffer, text = self._buffer + text, ""
            start = self._buffer.lstrip()
            if FENCE.startswith(start):  # too short to tell yet
                return []
            self._bare = start.startswith(("{", FENCE))
        if self._bare:
            self._buffer += text
            return []
        return super().feed(text)

    def flush(self) -> list[Piece]:
        bodies = bare_calls(self._buffer, self._names) if self._bare else []
        if not bodies:
            return super().flush()
        self._buffer, out = "", []
        for body in bodies:
            call = CallObject(self._calls)
            pieces, _ = call.read(body)
            out += pieces + call.finish()
        return out


def bare_calls(text: str, tools: Collection[str]) -> list[str]:
    """The JSON text of each call in a bare (or fenced) answer: one or more objects
    apart by white space or commas, each naming an offered tool. ``[]`` if it is not."""
    rest, bodies = _unfenced(text), []
    decoder = json.JSONDecoder()
    while rest:
        try:
            value, end = decoder.raw_decode(rest)
        except ValueError:
            return []
        if not (isinstance(value, dict) and value.get("name") in tools and "arguments" in value):
            return []
        bodies.append(rest[:end])
        rest = rest[end:].lstrip().removeprefix(",").lstrip()
    return bodies


def _unfenced(text: str) -> str:
    text = text.strip()
    if text.startswith(FENCE) and text.endswith("```"):
        text = text[len(FENCE) : -3]
    return text.strip()


def forced(tools: Sequence[Tool]) -> ForcedCall:
    return ForcedCall(CALL_OPEN + "\n", call_objects(tools), "\n" + CALL_CLOSE)
