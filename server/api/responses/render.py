"""Engine events rendered as OpenAI Responses: a response object, or its event stream
(each event with its ``sequence_number``, as the OpenAI SDK parses them).

The model's reasoning is a ``reasoning`` item whose ``content`` is one ``reasoning_text``
part (its raw text, streamed as ``response.reasoning_text.delta``); no summary is
written. A function call's arguments stream as ``response.function_call_arguments.delta``
pieces as they are generated.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from backends.base import ChatMessage, ToolCall
from server.api.relay import Answer
from server.engine.requests import (
    Event,
    Failed,
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


def reasoning_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    content = [{"type": "reasoning_text", "text": text}] if status == "completed" else []
    return {"id": item_id, "type": "reasoning", "status": status, "summary": [],
            "content": content}  # fmt: skip


def call_item(item_id: str, call: ToolCall, status: str = "completed") -> dict[str, Any]:
    namespace, _, name = call.name.rpartition(".")
    item = {"id": item_id, "type": "function_call", "status": status, "call_id": call.id,
            "name": name, "arguments": call.arguments if status == "completed" else ""}  # fmt: skip
    if namespace:
        item["namespace"] = namespace
    return item


def as_messages(output: Sequence[dict[str, Any]]) -> tuple[ChatMessage, ...]:
    """A response's output as the assistant turn a later request continues from, its
    reasoning kept as the turn's reasoning."""
    text = "".join(c["text"] for o in output if o["type"] == "message" for c in o["content"])
    reasoning = "".join(c["text"] for o in output if o["type"] == "reasoning"
                        for c in o["content"])  # fmt: skip
    calls = tuple(
        ToolCall(o["call_id"], ".".join(filter(None, (o.get("namespace"), o["name"]))),
                 o["arguments"])
        for o in output if o["type"] == "function_call"
    )  # fmt: skip
    if not (text or calls or reasoning):
        return ()
    return (ChatMessage("assistant", text, calls, reasoning=reasoning or None),)


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
            "reasoning": self.echo.get("reasoning") or {"effort": None, "summary": None},
            "truncation": "disabled",
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


# An item of text: its id prefix, its content part's type, its events' prefix.
_TEXT_KINDS = {
    "message": ("msg_", "output_text", "response.output_text"),
    "reasoning": ("rs_", "reasoning_text", "response.reasoning_text"),
}


@dataclass(slots=True)
class _Open:
    kind: str  # "message" or "reasoning"
    id: str
    index: int  # its output_index
    pieces: list[str] = field(default_factory=list)


class Output:
    """The output items of a stream as they are produced: a message or reasoning item
    opened at its first piece and closed when another kind of output begins, or at the
    end; each function call one item, opened when it starts."""

    def __init__(self, response: Response) -> None:
        self.r = response
        self.items: list[dict[str, Any]] = []
        self._open: _Open | None = None
        self._calls: dict[int, tuple[str, int, str]] = {}  # index -> item id, slot, sent

    def start(self) -> bytes:
        body = self.r.body("in_progress")
        return self.r.event("response.created", response=body) + self.r.event(
            "response.in_progress", response=body
        )

    def end(self, last: Finished | Failed) -> tuple[bytes, dict[str, Any]]:
        """The last events (the open item closed, then the response completed, or
        incomplete at max_output_tokens, or failed) and the response's body."""
        closing = self.close_text()
        if isinstance(last, Failed):
            body = self.r.body("failed", self.items, error=last.error)
            return closing + self.r.event("response.failed", response=body), body
        body = self.r.body("completed", self.items, last)
        name = "response.completed" if body["status"] == "completed" else "response.incomplete"
        return closing + self.r.event(name, response=body), body

    def feed(self, event: Event) -> bytes:
        """The events of a piece of text, reasoning or a call; b"" for any other."""
        if isinstance(event, TextDelta | ReasoningDelta):
            kind = "message" if isinstance(event, TextDelta) else "reasoning"
            return self._piece(kind, event.text) if event.text else b""
        if isinstance(event, ToolCallStarted):
            return self._call_start(event.index, ToolCall(event.id, event.name, ""))
        if isinstance(event, ToolCallArguments):
            item_id, slot, sent = self._calls[event.index]
            self._calls[event.index] = (item_id, slot, sent + event.text)
            return self._arguments(item_id, slot, event.text)
        if isinstance(event, ToolCallDelta):
            return self.call(event.index, event.call)
        return b""

    def _piece(self, kind: str, delta: str) -> bytes:
        out = b""
        if self._open is None or self._open.kind != kind:
            out = self.close_text()
            prefix, part_type, _ = _TEXT_KINDS[kind]
            self._open = _Open(kind, prefix + uuid.uuid4().hex, len(self.items))
            out += self.r.event("response.output_item.added", output_index=self._open.index,
                                item=self._item(self._open, "in_progress"))  # fmt: skip
            out += self.r.event("response.content_part.added", content_index=0,
                                part=_part(part_type, ""), **self._where())  # fmt: skip
        self._open.pieces.append(delta)
        extra: dict[str, Any] = {"logprobs": []} if kind == "message" else {}
        name = _TEXT_KINDS[kind][2] + ".delta"
        return out + self.r.event(name, content_index=0, delta=delta, **self._where(), **extra)

    def close_text(self) -> bytes:
        """Close the open message or reasoning item."""
        if self._open is None:
            return b""
        item = self._item(self._open)
        where, kind, text = self._where(), self._open.kind, "".join(self._open.pieces)
        self._open = None
        self.items.append(item)
        extra: dict[str, Any] = {"logprobs": []} if kind == "message" else {}
        r = self.r
        return (
            r.event(_TEXT_KINDS[kind][2] + ".done", content_index=0, text=text, **where, **extra)
            + r.event("response.content_part.done", content_index=0, part=item["content"][0],
                      **where)
            + r.event("response.output_item.done", output_index=where["output_index"], item=item)
        )  # fmt: skip

    def _where(self) -> dict[str, Any]:
        assert self._open is not None
        return {"item_id": self._open.id, "output_index": self._open.index}

    @staticmethod
    def _item(open_: _Open, status: str = "completed") -> dict[str, Any]:
        build = message_item if open_.kind == "message" else reasoning_item
        return build(open_.id, "".join(open_.pieces), status)

    def _call_start(self, index: int, call: ToolCall) -> bytes:
        out, slot, item_id = self.close_text(), len(self.items), "fc_" + uuid.uuid4().hex
        item = call_item(item_id, call, "in_progress")
        self.items.append(item)  # its place, until it is done
        self._calls[index] = (item_id, slot, "")
        return out + self.r.event("response.output_item.added", output_index=slot, item=item)

    def _arguments(self, item_id: str, slot: int, delta: str) -> bytes:
        return self.r.event("response.function_call_arguments.delta", item_id=item_id,
                            output_index=slot, delta=delta)  # fmt: skip

    def call(self, index: int, call: ToolCall) -> bytes:
        """A call's end: the rest of its streamed arguments, or the call whole."""
        out = b""
        if index not in self._calls:
            out = self._call_start(index, call)
        item_id, slot, sent = self._calls.pop(index)
        rest = call.arguments[len(sent) :]
        if rest:
            out += self._arguments(item_id, slot, rest)
        out += self.r.event("response.function_call_arguments.done", item_id=item_id,
                            output_index=slot, arguments=call.arguments)  # fmt: skip
        item = self.items[slot] = call_item(item_id, call)
        return out + self.r.event("response.output_item.done", output_index=slot, item=item)


def _part(part_type: str, text: str) -> dict[str, Any]:
    if part_type == "output_text":
        return {"type": part_type, "text": text, "annotations": []}
    return {"type": part_type, "text": text}


def whole(response: Response, answer: Answer) -> dict[str, Any]:
    output = (
        [reasoning_item("rs_" + uuid.uuid4().hex, answer.reasoning)] if answer.reasoning else []
    )
    output += [message_item("msg_" + uuid.uuid4().hex, answer.text)] if answer.text else []
    output += [call_item("fc_" + uuid.uuid4().hex, c) for c in answer.calls]
    return response.body("completed", output, answer.finished)
