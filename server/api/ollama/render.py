"""Engine events rendered in Ollama's shapes: newline-delimited JSON lines, a whole
reply, and the ``{"error": "..."}`` body of every error on ``/api/*``.

The last line (or the whole reply) carries ``done_reason`` and Ollama's counts and
durations in nanoseconds: ``prompt_eval_count`` is the whole prompt, cached prefix
included; ``load_duration`` is the wait for the model to load (0 when it was loaded);
``prompt_eval_duration`` runs from then to the first output (queueing and prefill),
``eval_duration`` from there to the end.

The model's reasoning is ``thinking`` (on the ``message`` of a chat, beside ``response``
on a generate), streamed in pieces as the text is; tool calls come whole.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from backends.base import ToolCall
from server.api.toolchoice import arguments_object
from server.engine.requests import (
    Event,
    Finished,
    FinishReason,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
)
from server.errors import HearthError

MEDIA_TYPE = "application/x-ndjson"
NS = 1_000_000_000


def error_body(error: HearthError) -> dict[str, Any]:
    return {"error": error.message}


def line(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False).encode() + b"\n"


def error_line(error: HearthError) -> bytes:
    return line(error_body(error))


def now() -> str:
    """``created_at``: RFC 3339 in UTC."""
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def tool_call(index: int, call: ToolCall) -> dict[str, Any]:
    function = {"index": index, "name": call.name, "arguments": arguments_object(call)}
    return {"id": call.id, "function": function}


def done_reason(finished: Finished) -> str:
    """Ollama has no reason of its own for tool calls: it says ``stop``."""
    return "length" if finished.reason is FinishReason.LENGTH else "stop"


@dataclass(frozen=True, slots=True)
class Reply:
    """The bodies of one answer: a chat's ``message`` or a generate's ``response``."""

    model: str  # as the client named it
    chat: bool
    began: float  # time.monotonic() when the request came
    loaded: float  # when its model was loaded and it could be submitted

    def head(self) -> dict[str, Any]:
        return {"model": self.model, "created_at": now()}

    def piece(
        self, text: str, calls: Sequence[ToolCall] = (), thinking: str = ""
    ) -> dict[str, Any]:
        said = {"thinking": thinking} if thinking else {}
        if not self.chat:
            return {**self.head(), "response": text, **said}
        message: dict[str, Any] = {"role": "assistant", "content": text, **said}
        if calls:
            message["tool_calls"] = [tool_call(i, c) for i, c in enumerate(calls)]
        return {**self.head(), "message": message}

    def feed(self, event: Event) -> bytes:
        """The line of a piece of text or thinking, or of a whole call; b"" for any other
        event (a call's streamed pieces among them)."""
        if isinstance(event, TextDelta):
            return self.part(event.text)
        if isinstance(event, ReasoningDelta):
            return line({**self.piece("", thinking=event.text), "done": False})
        if isinstance(event, ToolCallDelta):
            return self.call(event.index, event.call)
        return b""

    def part(self, text: str) -> bytes:
        return line({**self.piece(text), "done": False})

    def call(self, index: int, call: ToolCall) -> bytes:
        message = {"role": "assistant", "content": "", "tool_calls": [tool_call(index, call)]}
        return line({**self.head(), "message": message, "done": False})

    def last(
        self,
        finished: Finished,
        first_output: float | None,
        text: str = "",
        calls: Sequence[ToolCall] = (),
        thinking: str = "",
    ) -> dict[str, Any]:
        end = time.monotonic()
        first = first_output or end
        usage = finished.usage
        return {
            **self.piece(text, calls, thinking),
            "done": True,
            "done_reason": done_reason(finished),
            "total_duration": _ns(end - self.began),
            "load_duration": _ns(self.loaded - self.began),
            "prompt_eval_count": usage.prompt_tokens,
            "prompt_eval_duration": _ns(first - self.loaded),
            "eval_count": usage.completion_tokens,
            "eval_duration": _ns(end - first),
        }

    def done_only(self, reason: str) -> dict[str, Any]:
        """The answer to a request that only loads or unloads the model."""
        return {**self.piece(""), "done": True, "done_reason": reason}


def _ns(seconds: float) -> int:
    return max(0, round(seconds * NS))
