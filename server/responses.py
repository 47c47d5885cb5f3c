"""The OpenAI response and chunk shapes, and Server-Sent Events encoding."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from server.errors import HearthError
from server.requests import Usage

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

    def full(self, text: str, finish_reason: str, usage: Usage) -> dict[str, Any]:
        if self.chat:
            choice: dict[str, Any] = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
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

    def usage_chunk(self, usage: Usage) -> bytes:
        obj = "chat.completion.chunk" if self.chat else "text_completion"
        return sse({**self._head(obj), "choices": [], "usage": usage_body(usage)})
