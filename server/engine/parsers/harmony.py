"""OpenAI's harmony format (gpt-oss): the answer is a run of messages, each
``<|start|>assistant<|channel|>CHANNEL [to=RECIPIENT] [<|constrain|>json]<|message|>
TEXT<|end|>`` (the first one without ``<|start|>assistant``, which the prompt wrote;
the last ends in ``<|return|>`` or ``<|call|>``, or where generation stopped).

The ``analysis`` channel is reasoning; ``final`` is the answer, and so is a
``commentary`` message without a recipient (a preamble shown to the user). A message
to ``functions.NAME`` is a call of the tool NAME, its text the JSON arguments, which
stream as generated. A message to another recipient (the built-in ``browser`` and
``python`` tools, which hearth does not offer) is taken as reasoning, and so is a call
when no tools were offered. Headers are markup: never content.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Sequence

from backends.base import Tool
from server.engine.parsers.base import CallParser, ForcedCall, content, earliest, held
from server.engine.parsers.calls import Piece
from server.engine.requests import ReasoningDelta

START, END, MESSAGE, CHANNEL = "<|start|>", "<|end|>", "<|message|>", "<|channel|>"
RETURN, CALL = "<|return|>", "<|call|>"
CALL_END = CALL
_ENDS = (END, RETURN, CALL)  # a message ends
_NEXT = (START, CHANNEL)  # a message ends where the next one's header starts
_CHANNEL = re.compile(r"<\|channel\|>\s*([A-Za-z_]+)")
_RECIPIENT = re.compile(r"to=([^\s<]+)")
FUNCTIONS = "functions."


class _Kind(enum.Enum):
    """What a message's text is."""

    REASONING = "reasoning"
    CONTENT = "content"
    CALL = "call"


class HarmonyParser(CallParser):
    """An answer of harmony messages: reasoning, content and calls (above)."""

    def __init__(
        self, tools: Sequence[Tool] = (), *, parallel: bool = True, reasoning_open: bool = False
    ) -> None:
        super().__init__(tools, parallel=parallel)
        self._tools = bool(tools)
        # What the current message's text is; None while a header is read.
        self._kind: _Kind | None = _Kind.REASONING if reasoning_open else None
        self._first = not reasoning_open  # the answer's first header: plain text allowed
        self._name = ""  # the called tool
        self._raw = ""  # the call's text so far
        self._sent = ""  # of it, the arguments sent: less the white space around

    def _run(self, *, final: bool) -> list[Piece]:
        out: list[Piece] = []
        while True:
            if self._kind is None:
                started = self._header(final=final)
                if started is None:
                    return out
                out += started
            found = earliest(self._buffer, _ENDS + _NEXT)
            if found is None:
                keep = 0 if final else held(self._buffer, _ENDS + _NEXT)
                body = self._buffer[: len(self._buffer) - keep]
                self._buffer = self._buffer[len(body) :]
                out += self._body(body)
                return out + self._end() if final else out
            at, tag = found
            out += self._body(self._buffer[:at]) + self._end()
            self._buffer = self._buffer[at + (len(tag) if tag in _ENDS else 0) :]

    def _header(self, *, final: bool) -> list[Piece] | None:
        """Read a message's header up to ``<|message|>``: None until it ends, then the
        pieces it starts (a call's start)."""
        if self._first:
            start = self._buffer.lstrip()
            partial = not final and "<|".startswith(start)
            if start and not start.startswith("<|") and not partial:
                self._first, self._kind = False, _Kind.CONTENT  # no harmony: plain text
                return []
        at = self._buffer.find(MESSAGE)
        if at < 0:
            if final:
                self._buffer = ""  # an unfinished header is markup
            return None
        header, self._buffer = self._buffer[:at], self._buffer[at + len(MESSAGE) :]
        self._first = False
        channel = _CHANNEL.search(header)
        recipient = _RECIPIENT.search(header)
        if recipient is not None:
            to = recipient.group(1)
            if to.startswith(FUNCTIONS) and self._tools:
                self._kind, self._name = _Kind.CALL, to.removeprefix(FUNCTIONS)
                self._raw = self._sent = ""
                return self._calls.start(self._name)
            self._kind = _Kind.REASONING
        elif channel is not None and channel.group(1) == "analysis":
            self._kind = _Kind.REASONING
        else:
            self._kind = _Kind.CONTENT
        return []

    def _body(self, text: str) -> list[Piece]:
        if self._kind is _Kind.REASONING:
            return [ReasoningDelta(text)] if text else []
        if self._kind is _Kind.CONTENT:
            return content(text)
        self._raw += text  # a call's arguments, less the white space around them
        piece = self._raw.strip()[len(self._sent) :]
        self._sent += piece
        return self._calls.arguments(piece)

    def _end(self) -> list[Piece]:
        kind, self._kind = self._kind, None
        if kind is not _Kind.CALL:
            return []
        return self._calls.finish(self._name, self._raw.strip())


def forced(tools: Sequence[Tool]) -> ForcedCall | None:
    """One tool only: the name is in the header, outside the JSON."""
    if len(tools) != 1:
        return None
    header = f"{CHANNEL}commentary to={FUNCTIONS}{tools[0].name} <|constrain|>json{MESSAGE}"
    return ForcedCall(header, json.loads(tools[0].parameters), CALL)
