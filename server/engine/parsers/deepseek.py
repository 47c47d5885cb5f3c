"""DeepSeek's calls, in its own tokens (the bars are U+FF5C, the spaces U+2581)::

    <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME
    ```json
    {...}
    ```<｜tool▁call▁end｜><｜tool▁calls▁end｜>

(V3 and R1; several calls one after another inside the calls' tags), and V3.1's
``<｜tool▁call▁begin｜>NAME<｜tool▁sep｜>{...}<｜tool▁call▁end｜>``. The calls' tags are
markup, dropped, in the spellings the R1 distills also write.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from backends.base import Tool
from server.engine.parsers.base import ForcedCall, Region, TaggedParser
from server.engine.parsers.calls import Calls, Piece
from server.engine.parsers.jsontext import JsonScanner

CALLS_BEGIN, CALLS_END = "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>"
CALL_BEGIN, CALL_SEP, CALL_CLOSE = "<｜tool▁call▁begin｜>", "<｜tool▁sep｜>", "<｜tool▁call▁end｜>"
CALL_END = CALL_CLOSE
_CALLS_BEGIN_TOO = (
    "<｜tool_calls_begin｜>", "<｜tool calls begin｜>", "<｜tool\\_calls\\_begin｜>",
    "<｜tool▁calls｜>",
)  # fmt: skip
END_OF_SENTENCE = "<｜end▁of▁sentence｜>"  # where a backend shows it: dropped
FUNCTION = "function"  # V3's call type, before the separator


class DeepSeekParser(TaggedParser):
    """Each call between its own tags; the tags around all calls are dropped."""

    opens = (CALL_BEGIN, CALLS_BEGIN, *_CALLS_BEGIN_TOO, CALLS_END, END_OF_SENTENCE)

    def region(self, tag: str) -> tuple[Region | None, str | None]:
        if tag == CALL_BEGIN:
            return DeepSeekCall(self._calls), CALL_CLOSE
        return None, None


class DeepSeekCall:
    """The text between ``<｜tool▁call▁begin｜>`` and ``<｜tool▁call▁end｜>``."""

    def __init__(self, calls: Calls) -> None:
        self._calls = calls
        self._name: str | None = None
        self._v3 = False  # V3's form: the name on a line, then a ```json fence
        self._arguments: JsonScanner | None = None
        self._sent = ""

    def read(self, text: str) -> tuple[list[Piece], int, bool]:
        out: list[Piece] = []
        at = 0
        while True:
            state = self._state()
            pieces, used = self._step(text[at:])
            out, at = out + pieces, at + used
            if at >= len(text) or (not used and self._state() == state):
                return out, at, False

    def finish(self, text: str) -> list[Piece]:
        out, _, _ = self.read(text + "\n" if self._name is None else text)  # V3's name line
        if self._name is None:
            return self._calls.finish(text.strip(), "", malformed=True)
        return out + self._calls.finish(self._name, self._sent)

    def _state(self) -> tuple[bool, bool]:
        return self._name is None, self._arguments is None

    def _step(self, text: str) -> tuple[list[Piece], int]:
        if self._name is None:
            return self._head(text)
        if self._arguments is None:
            start = text.lstrip()
            if self._v3 and start.startswith("```"):
                end = start.find("\n")
                start = start[end + 1 :].lstrip() if end >= 0 else ""
            if not start or (self._v3 and "```".startswith(start)):
                return [], 0
            self._arguments = JsonScanner()
            return [], len(text) - len(start)
        if self._arguments.done:  # the closing fence: dropped
            return [], len(text)
        piece = text[: self._arguments.feed(text)]
        self._sent += piece
        return self._calls.arguments(piece), len(text)

    def _head(self, text: str) -> tuple[list[Piece], int]:
        """The call's name: after the separator (V3.1), or on the line after it (V3)."""
        at = text.find(CALL_SEP)
        if at < 0:
            return [], 0
        head, after = text[:at].strip(), at + len(CALL_SEP)
        if head != FUNCTION:
            self._name = head
            return self._calls.start(head), after
        end = text.find("\n", after)
        if end < 0:
            return [], 0
        self._name, self._v3 = text[after:end].strip(), True
        return self._calls.start(self._name), end + 1


def forced(tools: Sequence[Tool]) -> ForcedCall | None:
    """One tool only: the name is outside the JSON."""
    if len(tools) != 1:
        return None
    before = f"{CALLS_BEGIN}{CALL_BEGIN}{FUNCTION}{CALL_SEP}{tools[0].name}\n```json\n"
    return ForcedCall(before, json.loads(tools[0].parameters), f"\n```{CALL_CLOSE}{CALLS_END}")
