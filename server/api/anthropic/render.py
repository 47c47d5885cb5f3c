"""Engine events rendered as Anthropic Messages: a whole message, or its event stream.

Usage follows Anthropic's split: ``input_tokens`` are the prompt tokens prefilled for
this request, ``cache_read_input_tokens`` those reused from an earlier request's KV
(prefix reuse), ``cache_creation_input_tokens`` is always 0 (hearth keeps every
prefilled prompt without being asked). A stream's ``message_start`` counts the whole
prompt as input, since reuse is known only once the request is admitted; its final
``message_delta`` carries the split.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from backends.base import ToolCall
from server.api.toolchoice import arguments_object
from server.engine.requests import Finished, FinishReason, Usage
from server.engine.toolcalls import CALL_CLOSE
from server.errors import HearthError

# HTTP status -> Anthropic's error type.
ERROR_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
    404: "not_found_error", 405: "invalid_request_error", 413: "request_too_large",
    429: "rate_limit_error", 500: "api_error", 503: "overloaded_error", 504: "timeout_error",
}  # fmt: skip


def error_body(error: HearthError) -> dict[str, Any]:
    kind = ERROR_TYPES.get(error.status, "api_error")
    return {"type": "error", "error": {"type": kind, "message": error.message}}


def event(name: str, payload: dict[str, Any]) -> bytes:
    data = json.dumps({"type": name, **payload}, ensure_ascii=False)
    return f"event: {name}\ndata: {data}\n\n".encode()


def error_event(error: HearthError) -> bytes:
    return event("error", {"error": error_body(error)["error"]})


def usage(u: Usage) -> dict[str, int]:
    return {
        "input_tokens": u.prompt_tokens - u.cached_tokens,
        "output_tokens": u.completion_tokens,
        "cache_read_input_tokens": u.cached_tokens,
        "cache_creation_input_tokens": 0,
    }


def stop(finished: Finished, stops: Sequence[str]) -> tuple[str, str | None]:
    """``stop_reason`` and ``stop_sequence``."""
    if finished.reason is FinishReason.TOOL_CALLS:
        return "tool_use", None
    if finished.reason is FinishReason.LENGTH:
        return "max_tokens", None
    matched = finished.stop_sequence
    if matched is not None and matched != CALL_CLOSE and matched in stops:
        return "stop_sequence", matched
    return "end_turn", None


def tool_use(call: ToolCall) -> dict[str, Any]:
    arguments = arguments_object(call)  # Anthropic's input is an object
    return {"type": "tool_use", "id": call.id, "name": call.name, "input": arguments}


@dataclass(frozen=True, slots=True)
class Message:
    """The bodies of one response."""

    id: str
    model: str
    stops: tuple[str, ...]

    def full(self, text: str, calls: Sequence[ToolCall], finished: Finished) -> dict[str, Any]:
        content: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
        content += [tool_use(c) for c in calls]
        reason, sequence = stop(finished, self.stops)
        return {
            **self.head(),
            "content": content,
            "stop_reason": reason,
            "stop_sequence": sequence,
            "usage": usage(finished.usage),
        }

    def head(self) -> dict[str, Any]:
        return {"id": self.id, "type": "message", "role": "assistant", "model": self.model}

    def start(self, prompt_tokens: int) -> bytes:
        message = {
            **self.head(), "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": usage(Usage(prompt_tokens, 0, 0)),
        }  # fmt: skip
        return event("message_start", {"message": message})

    def end(self, finished: Finished) -> bytes:
        reason, sequence = stop(finished, self.stops)
        delta = {"stop_reason": reason, "stop_sequence": sequence}
        body = event("message_delta", {"delta": delta, "usage": usage(finished.usage)})
        return body + event("message_stop", {})


class Blocks:
    """Content blocks of a stream: opens a text block at the first text, closes it
    before a tool call, and numbers them."""

    def __init__(self) -> None:
        self.index = -1
        self.text_open = False

    def text(self, text: str) -> bytes:
        out = b""
        if not self.text_open:
            self.index += 1
            self.text_open = True
            block = {"type": "text", "text": ""}
            out = event("content_block_start", {"index": self.index, "content_block": block})
        delta = {"type": "text_delta", "text": text}
        return out + event("content_block_delta", {"index": self.index, "delta": delta})

    def call(self, call: ToolCall) -> bytes:
        out = self.close()
        self.index += 1
        block = {**tool_use(call), "input": {}}
        out += event("content_block_start", {"index": self.index, "content_block": block})
        arguments = json.dumps(tool_use(call)["input"], ensure_ascii=False)
        delta = {"type": "input_json_delta", "partial_json": arguments}
        out += event("content_block_delta", {"index": self.index, "delta": delta})
        return out + event("content_block_stop", {"index": self.index})

    def close(self) -> bytes:
        if not self.text_open:
            return b""
        self.text_open = False
        return event("content_block_stop", {"index": self.index})
