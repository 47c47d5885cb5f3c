"""Anthropic Messages request bodies parsed into the one internal request.

What each field does here is decided on purpose and listed in docs/anthropic.md:
fields the model's answer depends on are honoured or refused; fields that only steer
Anthropic's hosted service (``cache_control``, ``context_management``, ``metadata``,
``service_tier``, betas) are accepted and change nothing. ``thinking`` and
``output_config.effort`` steer a reasoning model's thinking: ``enabled`` demands it (a
model without a reasoning mode refuses), ``adaptive`` (Claude Code's) only allows it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from typing import Any

from backends.base import ChatMessage, Constraint, SamplingParams, Tool, ToolCall
from server.api import fields as f
from server.api import thinking, toolchoice
from server.api.anthropic.tools import parse_tools
from server.api.fields import schema_text
from server.engine.requests import GenerationRequest, Thinking
from server.errors import InvalidRequest, UnsupportedParameter

MAX_MESSAGES = 4096
MAX_PROMPT_CHARS = 8 * 1024 * 1024
RANGES = {"temperature": (0.0, 1.0), "top_p": (0.0, 1.0), "top_k": (0, 100_000)}
# Steer Anthropic's hosted service only: accepted, no effect on the answer.
HOSTED_ONLY = {
    "metadata", "context_management", "service_tier", "cache_control", "container",
    "inference_geo", "speed", "diagnostics", "user_profile_id", "workspace_id",
}  # fmt: skip
FIELDS = {
    "model", "messages", "system", "max_tokens", "stop_sequences", "stream", "temperature",
    "top_p", "top_k", "tools", "tool_choice", "output_config", "thinking",
} | HOSTED_ONLY  # fmt: skip
# thinking.type -> the engine's mode: "between_tools" is thinking off (its progress notes
# between tool calls come as text).
THINKING_MODES = {"enabled": "on", "disabled": "off", "adaptive": "auto", "between_tools": "off"}
EFFORTS = ("low", "medium", "high", "xhigh", "max")
COUNT_FIELDS = FIELDS  # what a count ignores (max_tokens, sampling) is accepted
# The first system block Claude Code sends: an account header, not instructions. It
# changes between sessions and would stand before everything a prefix cache reuses.
BILLING_HEADER = "x-anthropic-billing-header:"
_BLOCK_KEYS = {"type", "text", "cache_control", "citations"}


@dataclass(frozen=True, slots=True)
class ParsedMessages:
    generation: GenerationRequest
    stream: bool
    model: str  # the name the client asked for, echoed back
    stop_sequences: tuple[str, ...] = ()  # the client's, without a call's end added
    show_thinking: bool = True  # False: thinking blocks come without their text


def parse_messages(
    body: Any, defaults: SamplingParams, *, model: str, tool_format: str = "hermes"
) -> ParsedMessages:
    """``tool_format``: how the model writes a call, for a forced one and a single one."""
    fields = f.as_object(body)
    _check_fields(fields, FIELDS)
    max_tokens = f.positive_int(fields, "max_tokens")
    if max_tokens is None:
        raise InvalidRequest("'max_tokens' is required", param="max_tokens")
    sampling = f.sampling(fields, defaults, RANGES)
    stops = f.stop_strings(fields.get("stop_sequences"), "stop_sequences")
    gen = GenerationRequest(
        request_id=f.request_id(),
        model=model,
        sampling=sampling,
        max_tokens=max_tokens,
        max_tokens_is_ceiling=True,
        stop=stops,
        arrival=time.monotonic(),
        messages=conversation(fields),
    )
    constraint = _output_format(fields.get("output_config"))
    if constraint is not None:
        gen = replace(gen, sampling=replace(gen.sampling, constraint=constraint))
    choice = parse_tools(fields.get("tools"), fields.get("tool_choice"))
    gen = toolchoice.apply(gen, choice, tool_format)
    asked, shown = _thinking(fields)
    gen = replace(gen, thinking=asked)
    streamed, name = f.boolean(fields, "stream"), str(fields.get("model"))
    return ParsedMessages(gen, streamed, name, stops, shown)


def parse_count(body: Any) -> tuple[tuple[ChatMessage, ...], tuple[Tool, ...]]:
    """``/v1/messages/count_tokens``: the prompt's messages and the tools it offers."""
    fields = f.as_object(body)
    _check_fields(fields, COUNT_FIELDS)
    _output_format(fields.get("output_config"))
    choice = parse_tools(fields.get("tools"), fields.get("tool_choice"))
    return conversation(fields), choice.tools if choice else ()


def model_name(body: Any) -> str:
    value = f.as_object(body).get("model")
    if not isinstance(value, str) or not value:
        raise InvalidRequest("'model' is required and must be a non-empty string", param="model")
    return value


def _check_fields(fields: dict[str, Any], allowed: set[str]) -> None:
    for name in fields:
        if name not in allowed:
            raise UnsupportedParameter(f"{name}: Extra inputs are not permitted", param=name)
    _thinking(fields)


def _thinking(fields: dict[str, Any]) -> tuple[Thinking, bool]:
    """``thinking`` and ``output_config.effort`` as the engine's :class:`Thinking`, and
    whether thinking is shown (``display: "omitted"`` sends its blocks empty)."""
    value, config = fields.get("thinking"), fields.get("output_config")
    level = config.get("effort") if isinstance(config, dict) else None
    asked = thinking.effort(level, "output_config.effort", EFFORTS)
    if value is None:
        return asked, True
    kind = value.get("type") if isinstance(value, dict) else None
    if kind not in THINKING_MODES or set(value) - {"type", "budget_tokens", "display"}:
        raise InvalidRequest(
            'thinking must be {"type": enabled | disabled | adaptive | between_tools}, '
            "with budget_tokens for enabled and display",
            param="thinking",
        )
    if value.get("display") not in (None, "summarized", "omitted"):
        raise InvalidRequest("thinking.display must be summarized or omitted", param="thinking")
    budget = value.get("budget_tokens")
    if kind == "enabled" or budget is not None:
        budget = f.positive_int({"thinking.budget_tokens": budget}, "thinking.budget_tokens")
        if budget is None:
            raise InvalidRequest("thinking.budget_tokens is required for enabled",
                                 param="thinking")  # fmt: skip
    mode = THINKING_MODES[kind]
    effort = None if mode == "off" else asked.effort
    shown = value.get("display") != "omitted"
    return Thinking(mode, effort, budget if mode == "on" else None), shown


def conversation(fields: dict[str, Any]) -> tuple[ChatMessage, ...]:
    """``system`` then ``messages``, as chat messages."""
    out = [ChatMessage("system", text) for text in _system(fields.get("system"))]
    value = fields.get("messages")
    if not isinstance(value, list) or not value or len(value) > MAX_MESSAGES:
        raise InvalidRequest(
            f"'messages' must be a non-empty array of at most {MAX_MESSAGES}", param="messages"
        )
    for i, message in enumerate(value):
        out += _message(i, message)
    if sum(len(m.content) + len(m.reasoning or "") for m in out) > MAX_PROMPT_CHARS:
        raise InvalidRequest(f"the prompt exceeds {MAX_PROMPT_CHARS} characters", param="messages")
    return tuple(out)


def _system(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    blocks = [_text_block(b, f"system[{i}]") for i, b in _blocks(value, "system")]
    text = "\n".join(b for b in blocks if not b.startswith(BILLING_HEADER))
    return [text] if text else []


def _blocks(value: Any, param: str) -> list[tuple[int, dict[str, Any]]]:
    if not isinstance(value, list):
        raise InvalidRequest(f"'{param}' must be a string or an array of blocks", param=param)
    for i, block in enumerate(value):
        if not isinstance(block, dict):
            raise InvalidRequest(f"'{param}[{i}]' must be an object", param=param)
    return list(enumerate(value))


def _text_block(block: dict[str, Any], param: str) -> str:
    kind = block.get("type")
    if kind in ("image", "document"):
        raise UnsupportedParameter(
            f"{param}: this server's models read text only; {kind} blocks are not supported",
            param=param,
        )
    if kind != "text" or not isinstance(block.get("text"), str) or set(block) - _BLOCK_KEYS:
        raise InvalidRequest(f"'{param}' must be a text block", param=param)
    text: str = block["text"]
    return text


def _message(i: int, value: Any) -> list[ChatMessage]:
    param = f"messages[{i}]"
    if not isinstance(value, dict) or set(value) - {"role", "content"}:
        raise InvalidRequest(f"'{param}' must be an object with role and content", param=param)
    role, content = value.get("role"), value.get("content")
    if role not in ("user", "assistant", "system"):
        raise InvalidRequest(f"'{param}.role' must be user, assistant or system", param=param)
    if isinstance(content, str):
        return [ChatMessage(role, content)]
    blocks = _blocks(content, f"{param}.content")
    if role == "assistant":
        return [_assistant(blocks, param)]
    results = [_tool_result(b, f"{param}.content[{j}]") for j, b in blocks
               if b.get("type") == "tool_result"]  # fmt: skip
    texts = [_text_block(b, f"{param}.content[{j}]") for j, b in blocks
             if b.get("type") != "tool_result"]  # fmt: skip
    if role == "system" or texts:
        results.append(ChatMessage(role, "".join(texts)))
    return results


def _assistant(blocks: list[tuple[int, dict[str, Any]]], param: str) -> ChatMessage:
    texts, calls, thoughts = [], [], []
    for j, block in blocks:
        where = f"{param}.content[{j}]"
        kind = block.get("type")
        if kind == "redacted_thinking":
            continue  # encrypted by Anthropic: nothing a model here can read
        if kind == "thinking":
            thoughts.append(_thinking_block(block, where))
        elif kind == "tool_use":
            name = toolchoice.check_name(block.get("name"), f"{where}.name")
            if not isinstance(block.get("id"), str) or not isinstance(block.get("input"), dict):
                raise InvalidRequest(
                    f"'{where}' must have a string id and an object input", param=where
                )
            calls.append(ToolCall(block["id"], name, json.dumps(block["input"])))
        else:
            texts.append(_text_block(block, where))
    reasoning = "".join(thoughts) or None
    return ChatMessage("assistant", "".join(texts), tuple(calls), reasoning=reasoning)


def _thinking_block(block: dict[str, Any], param: str) -> str:
    """An earlier answer's thinking; its ``signature`` (ours is a checksum, Anthropic's
    an encryption) is not checked."""
    text = block.get("thinking")
    if not isinstance(text, str) or set(block) - {"type", "thinking", "signature", "cache_control"}:
        raise InvalidRequest(f"'{param}' must be a thinking block", param=param)
    return text


def _tool_result(block: dict[str, Any], param: str) -> ChatMessage:
    call_id, content = block.get("tool_use_id"), block.get("content", "")
    if not isinstance(call_id, str):
        raise InvalidRequest(f"'{param}.tool_use_id' must be a string", param=param)
    if set(block) - {"type", "tool_use_id", "content", "is_error", "cache_control"}:
        raise InvalidRequest(f"'{param}' has unknown keys", param=param)
    if isinstance(content, str):
        text = content
    else:
        text = "".join(_text_block(b, f"{param}.content[{k}]")
                       for k, b in _blocks(content, f"{param}.content"))  # fmt: skip
    if f.boolean(block, "is_error", f"{param}.is_error"):
        text = f"Error: {text}"
    return ChatMessage("tool", text, tool_call_id=call_id)


def _output_format(value: Any) -> Constraint | None:
    """``output_config``: ``format`` (``{"type": "json_schema", "schema"}``: structured
    output under a grammar); its ``effort`` is read with ``thinking``."""
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) - {"effort", "format"}:
        raise InvalidRequest("'output_config' takes effort and format", param="output_config")
    fmt = value.get("format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema" or set(fmt) - {
        "type", "schema"
    }:  # fmt: skip
        raise InvalidRequest(
            '\'output_config.format\' must be {"type": "json_schema", "schema": ...}',
            param="output_config",
        )
    return Constraint(schema=schema_text(fmt.get("schema", {}), "output_config"))
