"""Mistral's calls, after ``[TOOL_CALLS]``: a JSON array of call objects (Mistral 7B
v0.3, Nemo: ``[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]``), or each call as
``[TOOL_CALLS]NAME[ARGS]{...}`` (Mistral Small 3.2, Magistral, Devstral, Ministral 3;
``[CALL_ID]ID`` may come before ``[ARGS]``). The call ends with its JSON; text after the
last call is content.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from backends.base import Tool
from server.engine.parsers.base import ForcedCall, Region, TaggedParser, call_objects, earliest
from server.engine.parsers.calls import Calls, Piece
from server.engine.parsers.jsontext import CallObjects, JsonScanner

TOOL_CALLS, ARGS, CALL_ID = "[TOOL_CALLS]", "[ARGS]", "[CALL_ID]"
END_OF_TURN = "</s>"  # where a backend shows it: dropped
CALL_END = None


class MistralParser(TaggedParser):
    """Calls after each ``[TOOL_CALLS]`` (above)."""

    opens = (TOOL_CALLS, END_OF_TURN)

    def region(self, tag: str) -> tuple[Region | None, str | None]:
        return (MistralCalls(self._calls) if tag == TOOL_CALLS else None), None


class MistralCalls:
    """What follows one ``[TOOL_CALLS]``: an array of call objects, one object, or a
    name and its JSON arguments."""

    def __init__(self, calls: Calls) -> None:
        self._calls = calls
        self._objects: CallObjects | None = None
        self._named = False
        self._name: str | None = None
        self._arguments: JsonScanner | None = None
        self._sent = ""

    def read(self, text: str) -> tuple[list[Piece], int, bool]:
        if self._objects is None and not self._named:
            start = text.lstrip()
            if not start:
                return [], len(text), False
            at = len(text) - len(start)
            if start[0] == "[":
                self._objects, at = CallObjects(self._calls, ",", "]"), at + 1
            elif start[0] == "{":
                self._objects = CallObjects(self._calls, None)
            else:
                self._named = True
            pieces, used, ended = self.read(text[at:])
            return pieces, at + used, ended
        if self._objects is not None:
            return self._objects.read(text)
        return self._read_named(text)

    def finish(self, text: str) -> list[Piece]:
        if self._objects is not None:
            return self._objects.finish(text)
        out, used, ended = self.read(text)
        if ended:
            return out
        if self._arguments is not None:
            return out + self._calls.finish(self._name or "", self._sent)
        return out + self._calls.finish(text[used:].strip(), "", malformed=True)

    def _read_named(self, text: str) -> tuple[list[Piece], int, bool]:
        """``NAME[ARGS]{...}``, maybe with ``[CALL_ID]ID`` before ``[ARGS]``."""
        out: list[Piece] = []
        at = 0
        if self._arguments is None:
            found = earliest(text, (ARGS, CALL_ID, "{"))
            if found is None:
                return [], 0, False
            at, tag = found
            if self._name is None:
                self._name = text[:at].strip()
            if tag == CALL_ID:  # the id up to [ARGS]: dropped
                pieces, used, ended = self._read_named(text[at + len(tag) :])
                return pieces, at + len(tag) + used, ended
            start = text[at + len(tag) :].lstrip() if tag == ARGS else text[at:]
            if not start:
                return [], at, False
            at = len(text) - len(start)
            self._arguments = JsonScanner()
            out += self._calls.start(self._name)
        piece = text[at : at + self._arguments.feed(text[at:])]
        self._sent += piece
        out += self._calls.arguments(piece)
        if not self._arguments.done:
            return out, len(text), False
        return out + self._calls.finish(self._name or "", self._sent), at + len(piece), True


def forced(tools: Sequence[Tool]) -> ForcedCall:
    """One tool: ``[TOOL_CALLS]NAME[ARGS]`` and its arguments; more: an array of one
    call object (the name is in the JSON)."""
    if len(tools) == 1:
        before = f"{TOOL_CALLS}{tools[0].name}{ARGS}"
        return ForcedCall(before, json.loads(tools[0].parameters), "")
    return ForcedCall(TOOL_CALLS + "[", call_objects(tools), "]")
