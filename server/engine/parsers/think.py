"""Reasoning between ``<think>`` and ``</think>`` (DeepSeek-R1 and its distills, Qwen3,
QwQ, GLM): the text inside is reasoning, the text after the close is the answer.

Where the prompt already opened the block (``reasoning_open``: DeepSeek-R1's template
ends in ``<think>\\n``), the answer's text starts as reasoning. An answer that starts
with a stray ``</think>`` (a block the template opened and closed), or an answer whose
block is followed by a second ``</think>``, has it dropped. White
space at the start and the end of the reasoning, and between it and the answer, is
dropped; reasoning is never read for tool calls.
"""

from __future__ import annotations

import enum

from server.engine.parsers.base import Buffered, content, partial_tag
from server.engine.parsers.calls import Piece
from server.engine.requests import ReasoningDelta


class _State(enum.Enum):
    START = "start"  # not told yet whether the answer starts with a tag
    REASONING = "reasoning"
    ANSWER = "answer"


class ThinkParser(Buffered):
    """Reasoning in ``<think>`` tags, then the answer (above)."""

    open_tag, close_tag = "<think>", "</think>"
    calls = failures = 0  # no tool calls here

    def __init__(self, *, reasoning_open: bool = False) -> None:
        super().__init__()
        self._state = _State.REASONING if reasoning_open else _State.START
        self._lead = reasoning_open  # white space (and a repeated open tag) still dropped

    def _run(self, *, final: bool) -> list[Piece]:
        if self._state is _State.START:
            self._start(final=final)
        if self._state is _State.START:
            return []
        if self._state is _State.REASONING:
            return self._reasoning(final=final)
        text, self._buffer = self._buffer, ""
        if self._lead:
            text = text.lstrip()
            if not final and text and self.close_tag.startswith(text):
                self._buffer = text  # perhaps the close tag again: wait for the rest
                return []
            # A close tag repeated (the engine closed the block for a budget, then the
            # model wrote its own) is not the answer's text.
            text = text.removeprefix(self.close_tag).lstrip()
            self._lead = not text
        return content(text)

    def _start(self, *, final: bool) -> None:
        start = self._buffer.lstrip()
        tags = (self.open_tag, self.close_tag)
        if not final and any(tag.startswith(start) for tag in tags):
            return  # too short to tell yet
        if start.startswith(self.open_tag):
            self._state, self._lead = _State.REASONING, True
            self._buffer = start[len(self.open_tag) :]
        elif start.startswith(self.close_tag):
            self._state, self._lead = _State.ANSWER, True
            self._buffer = start[len(self.close_tag) :]
        else:
            self._state = _State.ANSWER

    def _reasoning(self, *, final: bool) -> list[Piece]:
        if self._lead:
            start = self._buffer.lstrip()
            if not final and (not start or self.open_tag.startswith(start)):
                self._buffer = start
                return []
            self._buffer = start.removeprefix(self.open_tag).lstrip()
            self._lead = not self._buffer
        at = self._buffer.find(self.close_tag)
        if at >= 0:
            thought = self._buffer[:at].rstrip()
            self._buffer = self._buffer[at + len(self.close_tag) :]
            self._state, self._lead = _State.ANSWER, True
            return _reasoning(thought) + self._run(final=final)
        if final:
            thought, self._buffer = self._buffer.rstrip(), ""
            return _reasoning(thought)
        keep = partial_tag(self._buffer, self.close_tag)
        thought = self._buffer[: len(self._buffer) - keep].rstrip()
        self._buffer = self._buffer[len(thought) :]
        if thought:
            self._lead = False
        return _reasoning(thought)


def _reasoning(text: str) -> list[Piece]:
    return [ReasoningDelta(text)] if text else []
