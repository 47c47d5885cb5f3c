"""Anthropic Messages request bodies parsed into the one internal request.

What each field does here is decided on purpose and listed in docs/anthropic.md:
fields the model's answer depends on are honoured or refused; fields that only steer
Anthropic's hosted service (``cache_control``, ``context_management``, ``metadata``,
``service_tier``, betas) are accepted and change nothing; ``thinking`` and
``output_config.effort`` have no effect while the model has no reasoning mode.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from typing import Any

from backends.base import ChatMessage, Constraint, SamplingParams, Tool, ToolCall
from server.api import fields as f
from server.api import toolchoice
from server.api.fields import schema_text
from server.engine.requests import GenerationRequest
from server.errors import InvalidRequest, UnsupportedParameter

MAX_MESSAGES = 4096
MAX_PROMPT_CHARS = 8 * 1024 * 1024
RANGES = {"temperature": (0.0, 1.0), "top_p": (0.0, 1.0), "top_k": (0, 100_000)}
# Steer Anthropic's hosted service only: accepted, no effect on the answer.
HOSTED_ONLY = {
    "metadata", "context_management", "service_tier", "cache_control", "container",
    "inference_geo", "speed", "diagnostics", "user_profile_id", "workspace_id",
}  # fmt: skip
NO_REASONING = {"thinking"}  # until a model here has a reasoning mode
FIELDS = {
    "model", "messages", "system", "max_tokens", "stop_sequences", "stream", "temperature",
    "top_p", "top_k", "tools", "tool_choice", "output_config",
} | HOSTED_ONLY | NO_REASONING  # fmt: skip
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


def parse_messages(body: Any, defaults: SamplingParams, *, model: str) -> ParsedMessages:
    fields = f.as_object(body)
    _check_fields(fields, FIELDS)
    max_tokens = f.positive_int(fields, "max_tokens")
    if max_tokens is None:
        raise InvalidRequest("'max_tokens' is required", param="max_tokens")
    sampling = f.sampling(fields, defaults, RANGES)
    gen = GenerationRequest(
        request_id=f.request_id(),
        model=model,
        sampling=sampling,
        max_tokens=max_tokens,
        max_tokens_is_ceiling=True,
        stop=f.stop_strings(fields.get("stop_sequences"), "stop_sequences"),
        arrival=time.monotonic(),
        messages=conversation(fields),
    )
    constraint = _output_format(fields.get("output_config"))
    if constraint is not None:
        gen = replace(gen, sampling=replace(gen.sampling, constraint=constraint))
    gen = toolchoice.apply(gen, _tools(fields.get("tools"), fields.get("tool_choice")))
    return ParsedMessages(gen, f.boolean(fields, "stream"), str(fields.get("model")))


def parse_count(body: Any) -> tuple[tuple[ChatMessage, ...], tuple[Tool, ...]]:
    """``/v1/messages/count_tokens``: the prompt's messages and the tools it offers."""
    fields = f.as_object(body)
    _check_fields(fields, COUNT_FIELDS)
    _output_format(fields.get("output_config"))
    choice = _tools(fields.get("tools"), fields.get("tool_choice"))
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
    thinking = fields.get("thinking")
    if thinking is not None and (
        not isinstance(thinking, dict)
        or thinking.get("type") not in ("enabled", "disabled", "adaptive")
    ):
        raise InvalidRequest(
            "thinking.type must be enabled, disabled or adaptive", param="thinking"
        )


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
    if sum(len(m.content) for m in out) > MAX_PROMPT_CHARS:
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
    texts, calls = [], []
    for j, block in blocks:
        where = f"{param}.content[{j}]"
        kind = block.get("type")
        if kind in ("thinking", "redacted_thinking"):
            continue  # earlier reasoning is not shown to the model again
        if kind == "tool_use":
            name = toolchoice.check_name(block.get("name"), f"{where}.name")
            if not isinstance(block.get("id"), str) or not isinstance(block.get("input"), dict):
                raise InvalidRequest(
                    f"'{where}' must have a string id and an object input", param=where
                )
            calls.append(ToolCall(block["id"], name, json.dumps(block["input"])))
        else:
            texts.append(_text_block(block, where))
    return ChatMessage("assistant", "".join(texts), tuple(calls))


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


def _tools(value: Any, choice: Any) -> toolchoice.ToolChoice | None:
    if value is None or value == []:
        kind = choice.get("type") if isinstance(choice, dict) else None
        if choice is not None and kind not in ("auto", "none"):
            raise InvalidRequest("'tool_choice' needs 'tools'", param="tool_choice")
        return None
    if not isinstance(value, list) or len(value) > toolchoice.MAX_TOOLS:
        raise InvalidRequest(
            f"'tools' must be an array of at most {toolchoice.MAX_TOOLS}", param="tools"
        )
    tools = tuple(_tool(i, t) for i, t in enumerate(value))
    mode, name, parallel = _choice(choice)
    return toolchoice.choose(tools, mode, name=name, parallel=parallel)


def _tool(i: int, value: Any) -> Tool:
    param = f"tools[{i}]"
    if not isinstance(value, dict):
        raise InvalidRequest(f"'{param}' must be an object", param="tools")
    if value.get("type", "custom") != "custom":
        raise UnsupportedParameter(
            f"{param}: {value.get('type')!r} is a tool Anthropic runs on its servers; this "
            "server offers the model only custom tools (name, description, input_schema)",
            param="tools",
        )
    if set(value) - {"type", "name", "description", "input_schema", "cache_control", "strict"}:
        raise InvalidRequest(f"'{param}' has unknown keys", param="tools")
    name = toolchoice.check_name(value.get("name"), f"{param}.name")
    description = value.get("description", "")
    if not isinstance(description, str):
        raise InvalidRequest(f"'{param}.description' must be a string", param="tools")
    schema = value.get("input_schema")
    if not isinstance(schema, dict):
        raise InvalidRequest(f"'{param}.input_schema' must be a JSON schema", param="tools")
    return Tool(name, description, schema_text(schema, "tools"))


def _choice(value: Any) -> tuple[toolchoice.Mode, str | None, bool]:
    if value is None:
        return toolchoice.Mode.AUTO, None, True
    kind = value.get("type") if isinstance(value, dict) else None
    modes = {"auto": toolchoice.Mode.AUTO, "any": toolchoice.Mode.ANY,
             "tool": toolchoice.Mode.NAMED, "none": toolchoice.Mode.NONE}  # fmt: skip
    if kind not in modes or set(value) - {"type", "name", "disable_parallel_tool_use"}:
        raise InvalidRequest(
            "'tool_choice' must be {\"type\": auto | any | tool | none}", param="tool_choice"
        )
    parallel = not f.boolean(value, "disable_parallel_tool_use", "tool_choice")
    name = value.get("name")
    if kind == "tool" and not isinstance(name, str):
        raise InvalidRequest("'tool_choice.name' is required for type tool", param="tool_choice")
    return modes[kind], name, parallel


def _output_format(value: Any) -> Constraint | None:
    """``output_config``: ``effort`` (no effect without reasoning) and ``format``
    (``{"type": "json_schema", "schema"}``: structured output under a grammar)."""
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) - {"effort", "format"}:
        raise InvalidRequest("'output_config' takes effort and format", param="output_config")
    if value.get("effort") not in (None, "low", "medium", "high", "xhigh", "max"):
        raise InvalidRequest("'output_config.effort' is not a known level", param="output_config")
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
