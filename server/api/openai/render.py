"""The OpenAI response and chunk shapes, and Server-Sent Events encoding."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from backends.base import ToolCall
from server.engine.requests import Usage
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
        self, text: str, finish_reason: str, usage: Usage, tool_calls: Sequence[ToolCall] = ()
    ) -> dict[str, Any]:
        if self.chat:
            message: dict[str, Any] = {"role": "assistant", "content": text}
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

    def tool_call_chunks(self, index: int, call: ToolCall) -> bytes:
        """Two chunks, as the openai client assembles them: the id, type and name with
        empty arguments, then the arguments."""
        head = {"index": index, **_call(call)}
        head["function"] = {"name": call.name, "arguments": ""}
        tail = {"index": index, "function": {"arguments": call.arguments}}
        return b"".join(self._delta_chunk({"tool_calls": [part]}) for part in (head, tail))

    def _delta_chunk(self, delta: dict[str, Any]) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}
        return sse({**self._head("chat.completion.chunk"), "choices": [choice]})

    def usage_chunk(self, usage: Usage) -> bytes:
        obj = "chat.completion.chunk" if self.chat else "text_completion"
        return sse({**self._head(obj), "choices": [], "usage": usage_body(usage)})


def _call(call: ToolCall) -> dict[str, Any]:
    function = {"name": call.name, "arguments": call.arguments}
    return {"id": call.id, "type": "function", "function": function}
