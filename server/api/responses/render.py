"""Engine events rendered as OpenAI Responses: a response object, or its event stream
(each event with its ``sequence_number``, as the OpenAI SDK parses them)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from backends.base import ChatMessage, ToolCall
from server.engine.requests import Finished, FinishReason, Usage
from server.errors import HearthError


def usage(u: Usage) -> dict[str, Any]:
    return {
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": {"cached_tokens": u.cached_tokens},
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": u.total_tokens,
    }


def message_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
    return {"id": item_id, "type": "message", "status": status, "role": "assistant",
            "content": content if status == "completed" else []}  # fmt: skip


def call_item(item_id: str, call: ToolCall, status: str = "completed") -> dict[str, Any]:
    namespace, _, name = call.name.rpartition(".")
    item = {"id": item_id, "type": "function_call", "status": status, "call_id": call.id,
            "name": name, "arguments": call.arguments if status == "completed" else ""}  # fmt: skip
    if namespace:
        item["namespace"] = namespace
    return item


def as_messages(output: Sequence[dict[str, Any]]) -> tuple[ChatMessage, ...]:
    """A response's output as the assistant turn a later request continues from."""
    text = "".join(c["text"] for o in output if o["type"] == "message" for c in o["content"])
    calls = tuple(
        ToolCall(o["call_id"], ".".join(filter(None, (o.get("namespace"), o["name"]))),
                 o["arguments"])
        for o in output if o["type"] == "function_call"
    )  # fmt: skip
    return (ChatMessage("assistant", text, calls),) if text or calls else ()


@dataclass(slots=True)
class Response:
    """One response: its head, and its event stream's numbering."""

    model: str
    echo: dict[str, Any]
    tools: list[dict[str, Any]]
    parallel: bool
    id: str = field(default_factory=lambda: "resp_" + uuid.uuid4().hex)
    created: int = field(default_factory=lambda: int(time.time()))
    sequence: int = 0

    def body(
        self, status: str, output: Sequence[dict[str, Any]] = (), finished: Finished | None = None,
        error: HearthError | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        incomplete = None
        if finished is not None and finished.reason is FinishReason.LENGTH:
            status, incomplete = "incomplete", {"reason": "max_output_tokens"}
        return {
            "id": self.id, "object": "response", "created_at": self.created, "status": status,
            "model": self.model, "output": list(output), "error": _error(error),
            "incomplete_details": incomplete, "parallel_tool_calls": self.parallel,
            "tool_choice": "auto", "tools": self.tools, "text": {"format": {"type": "text"}},
            "reasoning": {"effort": None, "summary": None}, "truncation": "disabled",
            "usage": usage(finished.usage) if finished else None,
            "instructions": self.echo.get("instructions"),
            "max_output_tokens": self.echo.get("max_output_tokens"),
            "metadata": self.echo.get("metadata") or {},
            "previous_response_id": self.echo.get("previous_response_id"),
            "temperature": self.echo.get("temperature"), "top_p": self.echo.get("top_p"),
            "store": True,
        }  # fmt: skip

    def event(self, name: str, **payload: Any) -> bytes:
        data = json.dumps({"type": name, "sequence_number": self.sequence, **payload},
                          ensure_ascii=False)  # fmt: skip
        self.sequence += 1
        return f"event: {name}\ndata: {data}\n\n".encode()


def error_event(error: HearthError) -> bytes:
    """An ``error`` event: a failure before the response object existed (the model's
    load failed, the request did not suit it)."""
    data = {"type": "error", "code": error.code or error.type, "message": error.message,
            "param": error.param, "sequence_number": 0}  # fmt: skip
    return f"event: error\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


def _error(error: HearthError | None) -> dict[str, str] | None:
    if error is None:
        return None
    return {"code": error.code or error.type, "message": error.message}


class Output:
    """The output items of a stream as they are produced: a message item opened at the
    first text, closed before a function call or at the end; each call one item."""

    def __init__(self, response: Response) -> None:
        self.r = response
        self.items: list[dict[str, Any]] = []
        self._text: list[str] | None = None
        self._id = ""

    def text(self, delta: str) -> bytes:
        out = b""
        if self._text is None:
            self._text, self._id = [], "msg_" + uuid.uuid4().hex
            item = message_item(self._id, "", "in_progress")
            out += self.r.event("response.output_item.added", output_index=len(self.items),
                                item=item)  # fmt: skip
            part = {"type": "output_text", "text": "", "annotations": []}
            out += self.r.event(
                "response.content_part.added", item_id=self._id, output_index=len(self.items),
                content_index=0, part=part,
            )  # fmt: skip
        self._text.append(delta)
        return out + self.r.event(
            "response.output_text.delta", item_id=self._id, output_index=len(self.items),
            content_index=0, delta=delta, logprobs=[],
        )  # fmt: skip

    def close_text(self) -> bytes:
        if self._text is None:
            return b""
        text, index = "".join(self._text), len(self.items)
        self._text = None
        item = message_item(self._id, text)
        self.items.append(item)
        r = self.r
        return (
            r.event("response.output_text.done", item_id=self._id, output_index=index,
                    content_index=0, text=text, logprobs=[])
            + r.event("response.content_part.done", item_id=self._id, output_index=index,
                      content_index=0, part=item["content"][0])
            + r.event("response.output_item.done", output_index=index, item=item)
        )  # fmt: skip

    def call(self, call: ToolCall) -> bytes:
        out, index, item_id = self.close_text(), len(self.items), "fc_" + uuid.uuid4().hex
        r = self.r
        out += r.event("response.output_item.added", output_index=index,
                       item=call_item(item_id, call, "in_progress"))  # fmt: skip
        out += r.event("response.function_call_arguments.delta", item_id=item_id,
                       output_index=index, delta=call.arguments)  # fmt: skip
        out += r.event("response.function_call_arguments.done", item_id=item_id,
                       output_index=index, arguments=call.arguments)  # fmt: skip
        item = call_item(item_id, call)
        self.items.append(item)
        return out + r.event("response.output_item.done", output_index=index, item=item)


def whole(response: Response, text: str, calls: Sequence[ToolCall], finished: Finished) -> dict[
    str, Any
]:  # fmt: skip
    output = [message_item("msg_" + uuid.uuid4().hex, text)] if text else []
    output += [call_item("fc_" + uuid.uuid4().hex, c) for c in calls]
    return response.body("completed", output, finished)
