"""Ollama's ``/api/chat`` and ``/api/generate`` bodies parsed into the one internal
request.

Ollama streams unless ``stream`` is false. A chat without messages, or a generate without
a prompt, only asks for the model to be loaded: it parses to no generation at all. What
each field does is decided in docs/ollama.md; a field not listed there is refused.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from typing import Any

from backends.base import ChatMessage, SamplingParams, ToolCall
from server.api import fields as f
from server.api import toolchoice
from server.api.ollama import options as o
from server.api.openai.tools import parse_tools
from server.engine.requests import INTERACTIVE, Fim, GenerationRequest
from server.errors import InvalidRequest, UnsupportedParameter

MAX_MESSAGES = 4096
COMMON = {"model", "stream", "options", "format", "keep_alive", "think", "images", "logprobs",
          "top_logprobs"}  # fmt: skip
CHAT_FIELDS = COMMON | {"messages", "tools"}
GENERATE_FIELDS = COMMON | {"prompt", "suffix", "system", "template", "context", "raw"}
_MESSAGE_KEYS = {"role", "content", "images", "thinking", "tool_calls", "tool_name",
                 "tool_call_id"}  # fmt: skip
_ROLES = ("system", "user", "assistant", "tool")


@dataclass(frozen=True, slots=True)
class Parsed:
    generation: GenerationRequest | None  # None: load the model, generate nothing
    stream: bool
    model: str  # the name the client asked for, echoed back
    keep_alive: float | None  # seconds the model stays once idle; None: its own rule


def model_name(body: Any) -> str:
    value = f.as_object(body).get("model")
    if not isinstance(value, str) or not value:
        raise InvalidRequest("model is required", param="model")
    return value


def parse_chat(body: Any, defaults: SamplingParams, *, model: str) -> Parsed:
    fields = _fields(body, CHAT_FIELDS)
    value = fields.get("messages")
    if value is None or value == []:
        return _parsed(fields, None)  # load the model only
    if not isinstance(value, list) or len(value) > MAX_MESSAGES:
        raise InvalidRequest(
            f"'messages' must be an array of at most {MAX_MESSAGES}", param="messages"
        )
    messages = tuple(_message(i, m) for i, m in enumerate(value))
    gen = _generation(fields, defaults, model, messages=messages)
    return _parsed(fields, toolchoice.apply(gen, parse_tools(fields.get("tools"), None, None)))


def parse_generate(body: Any, defaults: SamplingParams, *, model: str) -> Parsed:
    fields = _fields(body, GENERATE_FIELDS)
    prompt, suffix, system = (_text(fields, k) for k in ("prompt", "suffix", "system"))
    raw = f.boolean(fields, "raw")
    if _text(fields, "template"):
        raise UnsupportedParameter(
            "template: Go templates are not supported; the model's own chat template is "
            "used, or none with raw: true",
            param="template",
        )
    if fields.get("context") not in (None, []):
        raise UnsupportedParameter(
            "context: the token context of an earlier answer is not supported; send the "
            "conversation to /api/chat",
            param="context",
        )
    if not prompt and not suffix:
        return _parsed(fields, None)  # load the model only
    if raw and suffix:
        raise InvalidRequest("raw mode does not support suffix", param="suffix")
    if system and (raw or suffix):
        raise UnsupportedParameter(
            f"system has no place in a {'raw' if raw else 'fill-in-the-middle'} prompt",
            param="system",
        )
    if suffix:  # fill in the middle: an editor's completion, so interactive
        gen = _generation(fields, defaults, model, fim=Fim(prompt, suffix))
        return _parsed(fields, replace(gen, priority=INTERACTIVE))
    if raw:
        return _parsed(fields, _generation(fields, defaults, model, prompt=prompt))
    messages: tuple[ChatMessage, ...] = (ChatMessage("system", system),) if system else ()
    messages += (ChatMessage("user", prompt),)
    return _parsed(fields, _generation(fields, defaults, model, messages=messages))


def _fields(body: Any, allowed: set[str]) -> dict[str, Any]:
    fields = f.as_object(body)
    for name in fields:
        if name not in allowed:
            raise UnsupportedParameter(f"unknown field {name!r}", param=name)
    o.check_refused(fields)
    o.parse_think(fields.get("think"))
    return fields


def _parsed(fields: dict[str, Any], gen: GenerationRequest | None) -> Parsed:
    keep_alive = o.parse_keep_alive(fields.get("keep_alive"))
    return Parsed(gen, _stream(fields), str(fields["model"]), keep_alive)


def _stream(fields: dict[str, Any]) -> bool:
    return fields.get("stream") is None or f.boolean(fields, "stream")


def _generation(
    fields: dict[str, Any], defaults: SamplingParams, model: str, **prompt: Any
) -> GenerationRequest:
    opts = o.parse_options(fields.get("options"), defaults)
    constraint = o.parse_format(fields.get("format"))
    sampling = (
        opts.sampling if constraint is None else replace(opts.sampling, constraint=constraint)
    )
    return GenerationRequest(
        request_id=f.request_id(),
        model=model,
        sampling=sampling,
        max_tokens=opts.max_tokens,
        # Ollama's num_predict bounds the answer and never refuses: at the context's end
        # the answer stops with done_reason "length".
        max_tokens_is_ceiling=True,
        stop=opts.stop,
        arrival=time.monotonic(),
        constraint_param="format",
        context_limit=opts.context_limit,
        keep_alive=o.parse_keep_alive(fields.get("keep_alive")),
        thinking=o.parse_think(fields.get("think")),
        **prompt,
    )


def _text(fields: dict[str, Any], name: str) -> str:
    value = fields.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidRequest(f"'{name}' must be a string", param=name)
    return value


def _message(i: int, value: Any) -> ChatMessage:
    param = f"messages[{i}]"
    if not isinstance(value, dict) or set(value) - _MESSAGE_KEYS:
        keys = ", ".join(sorted(_MESSAGE_KEYS))
        raise InvalidRequest(f"'{param}' must be an object with {keys}", param=param)
    role = value.get("role")
    if role not in _ROLES:
        raise InvalidRequest(f"'{param}.role' must be one of {', '.join(_ROLES)}", param=param)
    o.check_refused(value)  # images
    content, thinking = _text(value, "content"), _text(value, "thinking")
    if role == "tool":
        call_id, name = _text(value, "tool_call_id"), _text(value, "tool_name")
        return ChatMessage("tool", content, tool_call_id=call_id or None, name=name or None)
    reasoning = thinking if role == "assistant" and thinking else None  # an earlier answer's
    calls = value.get("tool_calls")
    if calls is None or calls == []:
        return ChatMessage(role, content, reasoning=reasoning)
    if role != "assistant" or not isinstance(calls, list):
        raise InvalidRequest(f"'{param}.tool_calls' must be an assistant's array", param=param)
    return ChatMessage(role, content, tuple(_call(f"{param}.tool_calls[{j}]", c)
                                            for j, c in enumerate(calls)),
                       reasoning=reasoning)  # fmt: skip


def _call(param: str, value: Any) -> ToolCall:
    """An earlier call: ``{"id"?, "function": {"index"?, "name", "arguments": {...}}}``."""
    function = value.get("function") if isinstance(value, dict) else None
    arguments = function.get("arguments", {}) if isinstance(function, dict) else None
    call_id = value.get("id", "") if isinstance(value, dict) else None
    if not isinstance(arguments, dict) or not isinstance(call_id, str):
        raise InvalidRequest(
            f'\'{param}\' must be {{"function": {{"name", "arguments": an object}}}}',
            param=param,
        )
    assert isinstance(function, dict)
    name = toolchoice.check_name(function.get("name"), f"{param}.function.name")
    return ToolCall(call_id, name, json.dumps(arguments, ensure_ascii=False))
