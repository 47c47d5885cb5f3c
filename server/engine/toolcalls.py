"""Tool calls parsed out of the model's text, as it streams.

The model writes ``<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>``; text
outside those tags stays content. A small model sometimes writes the call's JSON alone,
without the tags, or in a ```json fence: an answer that starts with ``{`` or ```json is
therefore held back to its end and taken as calls if it is a sequence of calls (separated
by white space or commas, as a small model writes several at once), each
``{"name": <an offered tool>, "arguments": ...}``. A call whose JSON does not parse,
names no offered tool, or whose arguments do not match the tool's parameter schema is
still returned (as written) and counted in
``hearth_tool_call_parse_failures_total``: never dropped.

With ``parallel_tool_calls: false`` the request also stops at ``</tool_call>`` (see
:mod:`server.api.openai.schemas`), so the model writes no second call; the parser
returns only the first call in any case (a bare answer is read to its end).
"""

from __future__ import annotations

import json
import re
import uuid
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from backends.base import Tool, ToolCall
from server.engine.inbox import RequestStream
from server.engine.metrics import Metrics
from server.engine.requests import Event, Failed, Finished, FinishReason, TextDelta, ToolCallDelta

CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
Piece = TextDelta | ToolCallDelta
_NAME = re.compile(r'"name"\s*:\s*"([^"]*)"')
FENCE = "```json"


class ToolCallParser:
    """Feed it text deltas; it returns content and complete calls, holding back only
    what might still be the start of a tag (and whitespace next to a call)."""

    def __init__(self, tools: Sequence[Tool], *, parallel: bool = True) -> None:
        self._schemas = {t.name: json.loads(t.parameters) for t in tools}
        self._max_calls = None if parallel else 1
        self._buffer = ""
        self._in_call = False
        self._bare = False  # the answer began with "{": held to the end
        self._emitted = False
        self.calls = 0
        self.failures = 0

    def feed(self, text: str) -> list[Piece]:
        self._buffer += text
        if not (self._bare or self._emitted or self.calls or self._in_call):
            start = self._buffer.lstrip()
            if FENCE.startswith(start):
                return []  # too short to tell yet
            self._bare = start.startswith(("{", FENCE))
        if self._bare:
            return []
        out: list[Piece] = []
        while True:
            tag = CALL_CLOSE if self._in_call else CALL_OPEN
            at = self._buffer.find(tag)
            if at < 0:
                break
            head, self._buffer = self._buffer[:at], self._buffer[at + len(tag) :]
            if self._in_call:
                out += self._call(head)
            elif head.strip() or not self.calls:
                out += self._content(head.rstrip() if head.strip() else "")
            self._in_call = not self._in_call
        if not self._in_call:
            keep = _partial_tag(self._buffer, CALL_OPEN)
            safe = self._buffer[: len(self._buffer) - keep]
            body = safe.rstrip()
            out += self._content(body)
            self._buffer = self._buffer[len(body) :]
        return out

    def flush(self) -> list[Piece]:
        """The end of the text: an unclosed call is parsed as it stands."""
        rest, self._buffer = self._buffer, ""
        bare = _bare_calls(rest, self._schemas) if self._bare else []
        if bare:
            return [piece for body in bare for piece in self._call(body)]
        if self._in_call:
            self._in_call = False
            return self._call(rest)
        return self._content(rest if rest.strip() or not self.calls else "")

    def _content(self, text: str) -> list[Piece]:
        self._emitted = self._emitted or bool(text)
        return [TextDelta(text)] if text else []

    def _call(self, body: str) -> list[Piece]:
        if self._max_calls is not None and self.calls >= self._max_calls:
            return []
        return [self._parse_call(body)]

    def _parse_call(self, body: str) -> ToolCallDelta:
        index, self.calls = self.calls, self.calls + 1
        call_id = "call_" + uuid.uuid4().hex[:24]
        try:
            value = json.loads(body)
        except ValueError:
            value = None
        if not isinstance(value, dict) or not isinstance(value.get("name"), str):
            self.failures += 1
            found = _NAME.search(body)
            return ToolCallDelta(index, ToolCall(call_id, found.group(1) if found else "", body))
        name, arguments = value["name"], value.get("arguments", {})
        if isinstance(arguments, str):  # some models write the arguments as a JSON string
            try:
                arguments = json.loads(arguments)
            except ValueError:
                self.failures += 1
                return ToolCallDelta(index, ToolCall(call_id, name, value["arguments"]))
        schema = self._schemas.get(name)
        if schema is None or not matches(arguments, schema):
            self.failures += 1
        text = json.dumps(arguments, ensure_ascii=False)
        return ToolCallDelta(index, ToolCall(call_id, name, text))


def _unfenced(text: str) -> str:
    text = text.strip()
    if text.startswith(FENCE) and text.endswith("```"):
        text = text[len(FENCE) : -3]
    return text.strip()


def _bare_calls(text: str, tools: Mapping[str, Any]) -> list[str]:
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


def _partial_tag(text: str, tag: str) -> int:
    """How many characters at the end of ``text`` could begin ``tag``."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0


_TYPES: dict[str, Any] = {
    "object": dict, "array": list, "string": str, "integer": int, "number": int | float,
    "boolean": bool, "null": type(None),
}  # fmt: skip


def matches(value: Any, schema: Any) -> bool:
    """A JSON Schema subset: type, enum, const, properties, required,
    additionalProperties: false, items. Anything else is taken as satisfied."""
    if not isinstance(schema, dict):
        return True
    if "enum" in schema and value not in schema["enum"]:
        return False
    if "const" in schema and value != schema["const"]:
        return False
    kinds = schema.get("type")
    if kinds is not None:
        kinds = kinds if isinstance(kinds, list) else [kinds]
        if not any(_is(value, k) for k in kinds):
            return False
    if isinstance(value, dict):
        props = schema.get("properties", {})
        if any(k not in value for k in schema.get("required", [])):
            return False
        if schema.get("additionalProperties") is False and set(value) - set(props):
            return False
        return all(matches(v, props.get(k)) for k, v in value.items())
    if isinstance(value, list):
        return all(matches(v, schema.get("items")) for v in value)
    return True


def _is(value: Any, kind: str) -> bool:
    if kind in ("integer", "number") and isinstance(value, bool):
        return False
    if kind == "integer" and isinstance(value, float):
        return value.is_integer()
    expected = _TYPES.get(kind)
    return expected is None or isinstance(value, expected)


class ToolCallStream(RequestStream):
    """A request's event stream with its text split into content and tool calls; the
    finish reason becomes ``tool_calls`` when the model called one. It wraps the
    engine's stream (and has no queue of its own)."""

    def __init__(
        self,
        inner: RequestStream,
        tools: Sequence[Tool],
        metrics: Metrics,
        model: str,
        *,
        parallel: bool = True,
    ) -> None:
        self.request_id = inner.request_id
        self._inner = inner
        self._parser = ToolCallParser(tools, parallel=parallel)
        self._ready: deque[Event] = deque()
        self._metrics = metrics
        self._model = model
        self._started = False

    def push(self, event: Event) -> None:
        self._inner.push(event)

    async def next(self) -> Event:
        while not self._ready:
            event = await self._inner.next()
            if isinstance(event, TextDelta):
                pieces = self._parser.feed(event.text)
                if not pieces and not self._started:
                    # Text held back is still a first token (for the first-token limit).
                    pieces = [TextDelta("")]
                self._started = True
                self._ready.extend(pieces)
            elif isinstance(event, Finished):
                self._ready.extend(self._parser.flush())
                self._count()
                reason = event.reason
                if self._parser.calls and reason is FinishReason.STOP:
                    event = replace(event, reason=FinishReason.TOOL_CALLS)
                self._ready.append(event)
            else:
                if isinstance(event, Failed):
                    self._count()
                self._ready.append(event)
        return self._ready.popleft()

    def _count(self) -> None:
        if self._parser.failures:
            name = "hearth_tool_call_parse_failures_total"
            self._metrics.inc(name, self._parser.failures, model=self._model)
            self._parser.failures = 0
