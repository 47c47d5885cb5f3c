"""Engine events rendered as Anthropic Messages: a whole message, or its event stream.

Usage follows Anthropic's split: ``input_tokens`` are the prompt tokens prefilled for
this request, ``cache_read_input_tokens`` those reused from an earlier request's KV
(prefix reuse), ``cache_creation_input_tokens`` is always 0 (hearth keeps every
prefilled prompt without being asked). A stream's ``message_start`` counts the whole
prompt as input, since reuse is known only once the request is admitted; its final
``message_delta`` carries the split.

Reasoning is a ``thinking`` block, before the text in a whole message, and in a stream
wherever the model thinks: ``thinking_delta`` pieces, then a ``signature_delta`` before
the block stops (Claude Code drops a thinking block that has none). The signature is a
checksum of the thinking, not Anthropic's encryption: it is never checked when it comes
back. A tool call streams as a ``tool_use`` block whose ``input_json_delta`` pieces are
the arguments as they are generated.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from backends.base import ToolCall
from server.api.relay import Answer
from server.api.toolchoice import arguments_object
from server.engine.requests import (
    Event,
    Finished,
    FinishReason,
    ReasoningDelta,
    TextDelta,
    ToolCallArguments,
    ToolCallDelta,
    ToolCallStarted,
    Usage,
)
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
    """``stop_reason`` and ``stop_sequence``; ``stops`` are the client's own (not the
    end of a call that ends a request allowed one call)."""
    if finished.reason is FinishReason.TOOL_CALLS:
        return "tool_use", None
    if finished.reason is FinishReason.LENGTH:
        return "max_tokens", None
    matched = finished.stop_sequence
    if matched is not None and matched in stops:
        return "stop_sequence", matched
    return "end_turn", None


def tool_use(call: ToolCall) -> dict[str, Any]:
    arguments = arguments_object(call)  # Anthropic's input is an object
    return {"type": "tool_use", "id": call.id, "name": call.name, "input": arguments}


def signature(thinking: str) -> str:
    """A thinking block's signature: opaque to clients, which send it back unchanged."""
    digest = hashlib.sha256(thinking.encode()).digest()[:24]
    return base64.b64encode(digest).decode()


def thinking_block(thinking: str, shown: bool = True) -> dict[str, Any]:
    text = thinking if shown else ""
    return {"type": "thinking", "thinking": text, "signature": signature(thinking)}


@dataclass(frozen=True, slots=True)
class Message:
    """The bodies of one response."""

    id: str
    model: str
    stops: tuple[str, ...]  # the client's stop_sequences

    def full(self, answer: Answer, show_thinking: bool = True) -> dict[str, Any]:
        """A whole message: its thinking, its text, its tool calls."""
        content = [thinking_block(answer.reasoning, show_thinking)] if answer.reasoning else []
        content += [{"type": "text", "text": answer.text}] if answer.text else []
        content += [tool_use(c) for c in answer.calls]
        reason, sequence = stop(answer.finished, self.stops)
        return {
            **self.head(),
            "content": content,
            "stop_reason": reason,
            "stop_sequence": sequence,
            "usage": usage(answer.finished.usage),
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
    """Content blocks of a stream, event by event: a block opens at the first piece of
    its kind and closes when another kind begins; they are numbered in order."""

    def __init__(self, show_thinking: bool = True) -> None:
        self.index = -1
        self._open: str | None = None  # the open block's type
        self._show_thinking = show_thinking
        self._thinking: list[str] = []
        self._sent: dict[int, str] = {}  # a streamed call's arguments sent so far

    def feed(self, item: Event) -> bytes:
        """The events of a text, thinking or tool call piece; b"" for any other."""
        if isinstance(item, TextDelta):
            return self.text(item.text) if item.text else b""
        if isinstance(item, ReasoningDelta):
            return self.thinking(item.text) if item.text else b""
        if isinstance(item, ToolCallStarted):
            self._sent[item.index] = ""
            return self._start({"type": "tool_use", "id": item.id, "name": item.name,
                                "input": {}})  # fmt: skip
        if isinstance(item, ToolCallArguments):
            self._sent[item.index] = self._sent.get(item.index, "") + item.text
            return self._delta({"type": "input_json_delta", "partial_json": item.text})
        if isinstance(item, ToolCallDelta):
            return self.call(item.index, item.call)
        return b""

    def text(self, text: str) -> bytes:
        out = b"" if self._open == "text" else self._start({"type": "text", "text": ""})
        return out + self._delta({"type": "text_delta", "text": text})

    def thinking(self, text: str) -> bytes:
        out = b""
        if self._open != "thinking":
            out = self._start({"type": "thinking", "thinking": "", "signature": ""})
        self._thinking.append(text)
        if not self._show_thinking:
            return out
        return out + self._delta({"type": "thinking_delta", "thinking": text})

    def call(self, index: int, call: ToolCall) -> bytes:
        """A call's end: the rest of its streamed arguments, or the call whole."""
        sent = self._sent.pop(index, None)
        if sent is None:
            out = self._start({**tool_use(call), "input": {}})
            arguments = json.dumps(tool_use(call)["input"], ensure_ascii=False)
        else:
            out, arguments = b"", call.arguments[len(sent) :]
        if arguments:
            out += self._delta({"type": "input_json_delta", "partial_json": arguments})
        return out + self.close()

    def close(self) -> bytes:
        """Stop the open block (a thinking block gets its signature first)."""
        if self._open is None:
            return b""
        out = b""
        if self._open == "thinking":
            sign = signature("".join(self._thinking))
            self._thinking = []
            out = self._delta({"type": "signature_delta", "signature": sign})
        self._open = None
        return out + event("content_block_stop", {"index": self.index})

    def _start(self, block: dict[str, Any]) -> bytes:
        out = self.close()
        self.index += 1
        self._open = block["type"]
        return out + event("content_block_start", {"index": self.index, "content_block": block})

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return event("content_block_delta", {"index": self.index, "delta": delta})
