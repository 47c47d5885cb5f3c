"""Llama 3.1-3.3's JSON calls: ``{"name": ..., "parameters": {...}}`` (``"arguments"``
too, and a leading ``"type": "function"``), after ``<|python_tag|>`` or alone at the
start of the answer, several apart by ``;``.

A bare answer is a call only if its object names an offered tool before its arguments;
else it is content. After ``<|python_tag|>`` whatever follows is a call: text that is no
JSON object (the built-in tools' ``brave_search.call(...)``) is returned as written and
counted as a failure. Text after the last call is content.
"""

from __future__ import annotations

from collections.abc import Sequence

from backends.base import Tool
from server.engine.parsers.base import ForcedCall, Region, TaggedParser, call_objects
from server.engine.parsers.calls import Piece
from server.engine.parsers.jsontext import MORE, CallObjects, Head, read_head

PYTHON_TAG = "<|python_tag|>"
END_OF_TURN = ("<|eom_id|>", "<|eot_id|>")  # where a backend shows them: dropped
CALL_END = None


class Llama3Parser(TaggedParser):
    """Calls after ``<|python_tag|>``, or a bare one at the answer's start (above)."""

    opens = (PYTHON_TAG, *END_OF_TURN)

    def __init__(self, tools: Sequence[Tool], *, parallel: bool = True) -> None:
        super().__init__(tools, parallel=parallel)
        self._names = {t.name for t in tools}
        self._told = False  # whether the answer starts with a call

    def region(self, tag: str) -> tuple[Region | None, str | None]:
        if tag == PYTHON_TAG:
            return CallObjects(self._calls, ";"), None
        return None, None

    def feed(self, text: str) -> list[Piece]:
        if self._told:
            return super().feed(text)
        self._buffer += text
        start = self._buffer.lstrip()
        if not start:
            return []
        head = read_head(start) if start.startswith("{") else None
        if head == MORE:
            return []
        self._told = True
        if isinstance(head, Head) and head.name in self._names:
            self._buffer = start
            self._enter(CallObjects(self._calls, ";"))
        return super().feed("")

    def flush(self) -> list[Piece]:
        self._told = True
        return super().flush()


def forced(tools: Sequence[Tool]) -> ForcedCall:
    """The bare JSON call, at the start of the answer."""
    return ForcedCall("", call_objects(tools, "parameters"), "")
