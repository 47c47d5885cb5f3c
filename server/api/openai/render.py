"""The OpenAI response and chunk shapes, and Server-Sent Events encoding.

A chat's reasoning goes out twice, as ``reasoning_content`` and as ``reasoning``: clients
read one or the other (llama.cpp's and exo's the first; vLLM's, Ollama's and mlx-lm's the
second). Tool calls stream as they are generated, as the ``openai`` client assembles
them: a call's first chunk has its index, id, type and name with empty arguments, the
next ones pieces of its arguments.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from backends.base import ToolCall
from server.engine.requests import (
    Event,
    Failed,
    Finished,
    ReasoningDelta,
    TextDelta,
    ToolCallArguments,
    ToolCallDelta,
    ToolCallStarted,
    Usage,
)
from server.errors import HearthError

DONE = b"data: [DONE]\n\n"


def sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, ensure_ascii=False).encode() + b"\n\n"


def sse_error(error: HearthError) -> bytes:
    return sse(error.body())


def usage_body(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
    }


@dataclass(frozen=True, slots=True)
class Shape:
    """Builds the bodies of one response: chat or text completion."""

    id: str
    model: str
    chat: bool
    created: int

    @classmethod
    def for_request(cls, request_id: str, model: str, *, chat: bool) -> Shape:
        prefix = "chatcmpl-" if chat else "cmpl-"
        return cls(prefix + request_id, model, chat, int(time.time()))

    def _head(self, obj: str) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}

    def full(
        self, text: str, finish_reason: str, usage: Usage, tool_calls: Sequence[ToolCall] = (),
        reasoning: str = "",
    ) -> dict[str, Any]:  # fmt: skip
        if self.chat:
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if reasoning:
                message |= _reasoning(reasoning)
            if tool_calls:
                message["content"] = text or None
                message["tool_calls"] = [_call(c) for c in tool_calls]
            choice: dict[str, Any] = {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason,
            }
            body = self._head("chat.completion")
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
            body = self._head("text_completion")
        return {**body, "choices": [choice], "usage": usage_body(usage)}

    def chunk(
        self, text: str | None, finish_reason: str | None = None, *, role: bool = False
    ) -> bytes:
        if self.chat:
            delta: dict[str, Any] = {}
            if role:
                delta["role"] = "assistant"
            if text is not None:
                delta["content"] = text
            choice: dict[str, Any] = {"index": 0, "delta": delta}
            body = self._head("chat.completion.chunk")
        else:
            choice = {"index": 0, "text": text or ""}
            body = self._head("text_completion")
        choice["logprobs"] = None
        choice["finish_reason"] = finish_reason
        return sse({**body, "choices": [choice]})

    def reasoning_chunk(self, text: str) -> bytes:
        return self.delta_chunk(_reasoning(text))

    def call_head_chunk(self, index: int, call_id: str, name: str) -> bytes:
        """A call's first chunk: its id, type and name, with empty arguments."""
        head = {"index": index, **_call(ToolCall(call_id, name, ""))}
        return self.delta_chunk({"tool_calls": [head]})

    def arguments_chunk(self, index: int, text: str) -> bytes:
        return self.delta_chunk({"tool_calls": [{"index": index, "function": {"arguments": text}}]})

    def tool_call_chunks(self, index: int, call: ToolCall) -> bytes:
        """A call not streamed: its head, then its arguments whole."""
        return self.call_head_chunk(index, call.id, call.name) + self.arguments_chunk(
            index, call.arguments
        )

    def delta_chunk(self, delta: dict[str, Any]) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}
        return sse({**self._head("chat.completion.chunk"), "choices": [choice]})

    def usage_chunk(self, usage: Usage) -> bytes:
        obj = "chat.completion.chunk" if self.chat else "text_completion"
        return sse({**self._head(obj), "choices": [], "usage": usage_body(usage)})


def _call(call: ToolCall) -> dict[str, Any]:
    function = {"name": call.name, "arguments": call.arguments}
    return {"id": call.id, "type": "function", "function": function}


def _reasoning(text: str) -> dict[str, str]:
    return {"reasoning_content": text, "reasoning": text}


class Chunks:
    """A streamed completion's chunks, event by event (the role chunk first, ``[DONE]``
    after the last)."""

    def __init__(self, shape: Shape, include_usage: bool) -> None:
        self._shape = shape
        self._include_usage = include_usage
        self._sent: dict[int, str] = {}  # a streamed call's arguments sent so far

    def start(self) -> bytes:
        return self._shape.chunk("", role=True)

    def feed(self, event: Event) -> bytes:
        shape = self._shape
        if isinstance(event, TextDelta):
            return shape.chunk(event.text)
        if isinstance(event, ReasoningDelta):
            return shape.reasoning_chunk(event.text)
        if isinstance(event, ToolCallStarted):
            self._sent[event.index] = ""
            return shape.call_head_chunk(event.index, event.id, event.name)
        if isinstance(event, ToolCallArguments):
            self._sent[event.index] = self._sent.get(event.index, "") + event.text
            return shape.arguments_chunk(event.index, event.text)
        if isinstance(event, ToolCallDelta):
            return self._call_end(event.index, event.call)
        if isinstance(event, Finished):
            usage = shape.usage_chunk(event.usage) if self._include_usage else b""
            return shape.chunk(None, event.reason.value) + usage
        if isinstance(event, Failed):
            return sse_error(event.error)
        return b""

    def _call_end(self, index: int, call: ToolCall) -> bytes:
        """The rest of a streamed call's arguments, or a call not streamed whole."""
        sent = self._sent.pop(index, None)
        if sent is None:
            return self._shape.tool_call_chunks(index, call)
        rest = call.arguments[len(sent) :]
        return self._shape.arguments_chunk(index, rest) if rest else b""
