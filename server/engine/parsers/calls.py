"""The tool calls of one answer, whatever their format: their indexes and ids, the
limit of one call when parallel calls are off, and the check of each call against
its tool's parameter schema. A call that fails the check is still returned, and
counted: never dropped."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

from backends.base import Tool, ToolCall
from server.engine.requests import (
    ReasoningDelta,
    TextDelta,
    ToolCallArguments,
    ToolCallDelta,
    ToolCallStarted,
)

Piece = TextDelta | ReasoningDelta | ToolCallStarted | ToolCallArguments | ToolCallDelta


class Calls:
    """Numbers the calls of an answer and checks each when it ends. A format's parser
    calls :meth:`start` once a call's name is read (optional), :meth:`arguments` for
    each piece of its JSON arguments as generated, then :meth:`finish` with the whole
    arguments text, which begins with the pieces sent."""

    def __init__(self, tools: Sequence[Tool], *, parallel: bool = True) -> None:
        self._schemas: dict[str, Any] = {t.name: json.loads(t.parameters) for t in tools}
        self._limit = None if parallel else 1
        self._current: tuple[int, str] | None = None  # the started call: index and id
        self._started = False  # a call is open (maybe past the limit, so not sent)
        self.count = 0  # calls returned
        self.failures = 0  # of those, the ones that did not parse or match

    def schema(self, name: str) -> Any:
        """The parameter schema of the tool ``name``; None if no such tool is offered."""
        return self._schemas.get(name)

    def start(self, name: str) -> list[Piece]:
        self._started = True
        if self._limit is not None and self.count >= self._limit:
            return []
        self._current = (self.count, "call_" + uuid.uuid4().hex[:24])
        return [ToolCallStarted(*self._current, name)]

    def arguments(self, text: str) -> list[Piece]:
        if self._current is None or not text:
            return []
        return [ToolCallArguments(self._current[0], text)]

    def finish(self, name: str, arguments: str, *, malformed: bool = False) -> list[Piece]:
        """The call's end: its whole arguments text (JSON), checked against the tool's
        schema; ``malformed``: the format's markup was broken, a failure whatever the
        arguments are."""
        current, self._current = self._current, None
        if not self._started:
            if self._limit is not None and self.count >= self._limit:
                return []
            current = (self.count, "call_" + uuid.uuid4().hex[:24])
        self._started = False
        if current is None:  # past the limit of calls
            return []
        self.count += 1
        if malformed or not self._valid(name, arguments):
            self.failures += 1
        return [ToolCallDelta(current[0], ToolCall(current[1], name, arguments))]

    def _valid(self, name: str, arguments: str) -> bool:
        try:
            value = json.loads(arguments)
        except ValueError:
            return False
        return name in self._schemas and matches(value, self._schemas[name])


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
