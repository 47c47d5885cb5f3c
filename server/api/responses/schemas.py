"""OpenAI Responses request bodies parsed into the one internal request.

Each field's handling is decided on purpose and listed in docs/responses.md. Hosted
tools (``web_search`` and the like) are not offered to the model and the response says
so, rather than refused: refusing them would shut Codex out, which always sends one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

from backends.base import ChatMessage, Constraint, SamplingParams, ToolCall
from server.api import fields as f
from server.api import thinking, toolchoice
from server.api.openai.formats import parse_response_format
from server.api.responses.tools import parse_choice, parse_tools
from server.engine.requests import GenerationRequest, Thinking
from server.errors import InvalidRequest, UnsupportedParameter

MAX_ITEMS = 4096
MAX_PROMPT_CHARS = 8 * 1024 * 1024
RANGES = {"temperature": (0.0, 2.0), "top_p": (0.0, 1.0)}
# Steer OpenAI's hosted service only: accepted, no effect on the answer.
HOSTED_ONLY = {
    "prompt_cache_key", "client_metadata", "safety_identifier", "user", "metadata",
    "service_tier", "include", "prompt_cache_retention", "stream_options",
}  # fmt: skip
FIELDS = {
    "model", "input", "instructions", "tools", "tool_choice", "parallel_tool_calls",
    "max_output_tokens", "temperature", "top_p", "text", "store", "previous_response_id",
    "stream", "truncation", "background", "max_tool_calls", "top_logprobs", "reasoning",
} | HOSTED_ONLY  # fmt: skip
# reasoning's keys: effort is honoured; the rest steer OpenAI's models only (a summary
# is never written: the reasoning comes whole, as reasoning_text).
REASONING_KEYS = {"effort", "summary", "generate_summary", "context", "mode"}
SUMMARIES = (None, "auto", "concise", "detailed")
INCLUDE_OK = {"reasoning.encrypted_content"}  # what may be asked for and is never there
_TEXT_PARTS = {"input_text", "output_text", "text", "summary_text", "refusal"}


@dataclass(frozen=True, slots=True)
class ParsedResponse:
    generation: GenerationRequest
    stream: bool
    store: bool
    previous: str | None  # previous_response_id
    instructions: str | None
    new_input: tuple[ChatMessage, ...]  # this request's items, without instructions
    not_offered: tuple[str, ...]  # hosted tools left out
    echo: dict[str, Any]  # fields the response object repeats


def parse(
    body: Any, defaults: SamplingParams, *, model: str, history: tuple[ChatMessage, ...] = (),
    tool_format: str = "hermes",
) -> ParsedResponse:  # fmt: skip
    """``history``: the conversation of ``previous_response_id``, already looked up;
    ``tool_format``: how the model writes a call, for a forced one and a single one."""
    fields = f.as_object(body)
    for name in fields:
        if name not in FIELDS:
            raise UnsupportedParameter(f"unrecognized request argument: '{name}'", param=name)
    _refuse_unhonoured(fields)
    instructions = fields.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise InvalidRequest("'instructions' must be a string", param="instructions")
    new_input = items(fields.get("input"))
    system = (ChatMessage("system", instructions),) if instructions else ()
    messages = system + history + new_input
    if sum(len(m.content) + len(m.reasoning or "") for m in messages) > MAX_PROMPT_CHARS:
        raise InvalidRequest(f"the input exceeds {MAX_PROMPT_CHARS} characters", param="input")
    gen = GenerationRequest(
        request_id=f.request_id(), model=model, sampling=f.sampling(fields, defaults, RANGES),
        max_tokens=f.positive_int(fields, "max_output_tokens"), max_tokens_is_ceiling=True,
        stop=(), arrival=time.monotonic(), messages=messages,
        thinking=_reasoning(fields.get("reasoning")),
    )  # fmt: skip
    constraint = _text_format(fields.get("text"))
    if constraint is not None:
        gen = replace(gen, sampling=replace(gen.sampling, constraint=constraint))
        gen = replace(gen, constraint_param="text")
    tools, not_offered = parse_tools(fields.get("tools"))
    gen = toolchoice.apply(gen, parse_choice(tools, fields), tool_format)
    echoed = ("instructions", "max_output_tokens", "metadata", "previous_response_id",
              "temperature", "top_p")  # fmt: skip
    echo = {k: fields.get(k) for k in echoed}
    asked = fields.get("reasoning") or {}
    echo["reasoning"] = {"effort": asked.get("effort"), "summary": asked.get("summary")}
    return ParsedResponse(
        gen, f.boolean(fields, "stream"), fields.get("store", True) is not False,
        _previous(fields.get("previous_response_id")), instructions or None, new_input,
        not_offered, echo,
    )  # fmt: skip


def model_name(body: Any) -> str:
    value = f.as_object(body).get("model")
    if not isinstance(value, str) or not value:
        raise InvalidRequest(
            "'model' is required", param="model", code="missing_required_parameter"
        )
    return value


def previous_id(body: Any) -> str | None:
    return _previous(f.as_object(body).get("previous_response_id"))


def _previous(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise InvalidRequest(
            "'previous_response_id' must be a string", param="previous_response_id"
        )
    return value


def _reasoning(value: Any) -> Thinking:
    """``reasoning``: its ``effort`` steers the model's thinking."""
    if value is None:
        return Thinking()
    if not isinstance(value, dict) or set(value) - REASONING_KEYS:
        keys = ", ".join(sorted(REASONING_KEYS))
        raise InvalidRequest(f"'reasoning' takes {keys}", param="reasoning")
    for key in ("summary", "generate_summary"):
        if value.get(key) not in SUMMARIES:
            raise InvalidRequest(f"'reasoning.{key}' must be auto, concise or detailed",
                                 param="reasoning")  # fmt: skip
    return thinking.effort(value.get("effort"), "reasoning.effort")


def _refuse_unhonoured(fields: dict[str, Any]) -> None:
    if fields.get("background") not in (None, False):
        raise UnsupportedParameter("background responses are not supported", param="background")
    if fields.get("truncation") not in (None, "disabled"):
        raise UnsupportedParameter(
            "'truncation' must be 'disabled': hearth never drops input to fit", param="truncation"
        )
    if fields.get("top_logprobs") not in (None, 0):
        raise UnsupportedParameter("logprobs are not supported yet", param="top_logprobs")
    if fields.get("max_tool_calls") is not None:
        raise UnsupportedParameter("'max_tool_calls' is not supported", param="max_tool_calls")
    include = fields.get("include") or []
    if not isinstance(include, list) or any(i not in INCLUDE_OK for i in include):
        raise UnsupportedParameter(
            f"'include' supports only {', '.join(sorted(INCLUDE_OK))}", param="include"
        )
    f.boolean(fields, "store")
    f.boolean(fields, "parallel_tool_calls")


def items(value: Any) -> tuple[ChatMessage, ...]:
    """``input``: a string (one user message) or items, as chat messages."""
    if isinstance(value, str):
        return (ChatMessage("user", value),)
    if not isinstance(value, list) or len(value) > MAX_ITEMS:
        raise InvalidRequest(
            f"'input' must be a string or an array of at most {MAX_ITEMS} items", param="input"
        )
    out: list[ChatMessage] = []
    for i, item in enumerate(value):
        _item(out, i, item)
    return tuple(replace(m, reasoning=m.reasoning or None) for m in out if not _thought_only(m))


def _thought_only(message: ChatMessage) -> bool:
    """An assistant turn of reasoning alone: reasoning items no message or call has
    followed yet."""
    return message.reasoning is not None and not (message.content or message.tool_calls)


def _item(out: list[ChatMessage], i: int, item: Any) -> None:
    param = f"input[{i}]"
    if not isinstance(item, dict):
        raise InvalidRequest(f"'{param}' must be an object", param="input")
    kind = item.get("type", "message")
    if kind == "message":
        role = item.get("role")
        role = "system" if role == "developer" else role
        if role not in ("user", "assistant", "system"):
            raise InvalidRequest(f"'{param}.role' must be user, assistant, system or developer",
                                 param="input")  # fmt: skip
        text = _text(item.get("content"), f"{param}.content")
        if role == "assistant" and out and _thought_only(out[-1]):  # its reasoning came first
            out[-1] = replace(out[-1], content=text)
        else:
            out.append(ChatMessage(role, text))
    elif kind == "function_call":
        name, call_id, arguments = item.get("name"), item.get("call_id"), item.get("arguments")
        if not (isinstance(name, str) and isinstance(call_id, str) and isinstance(arguments, str)):
            raise InvalidRequest(
                f"'{param}' needs string name, call_id and arguments", param="input"
            )
        namespace = item.get("namespace")
        full = f"{namespace}.{name}" if isinstance(namespace, str) and namespace else name
        call = ToolCall(call_id, full, arguments)
        last = out[-1] if out else None
        if last is not None and last.role == "assistant":  # the same turn's text or calls
            out[-1] = replace(last, tool_calls=(*last.tool_calls, call))
        else:
            out.append(ChatMessage("assistant", "", (call,)))
    elif kind == "function_call_output":
        call_id = item.get("call_id")
        if not isinstance(call_id, str):
            raise InvalidRequest(f"'{param}.call_id' must be a string", param="input")
        out.append(ChatMessage("tool", _text(item.get("output"), f"{param}.output"),
                               tool_call_id=call_id))  # fmt: skip
    elif kind == "reasoning":  # the reasoning of the assistant turn that follows
        thought = _reasoning_text(item, param)
        if out and _thought_only(out[-1]):
            joined = "\n\n".join(t for t in (out[-1].reasoning, thought) if t)
            out[-1] = replace(out[-1], reasoning=joined)
        else:
            out.append(ChatMessage("assistant", "", reasoning=thought))
    else:
        raise UnsupportedParameter(f"'{param}': input items of type {kind!r} are not supported",
                                   param="input")  # fmt: skip


def _reasoning_text(item: dict[str, Any], param: str) -> str:
    """A reasoning item's text: its ``content`` (``reasoning_text`` parts), or where it
    has none its ``summary`` (``summary_text``); ``encrypted_content`` is OpenAI's own."""
    texts = {}
    for key, part_type in (("content", "reasoning_text"), ("summary", "summary_text")):
        parts = item.get(key) or []
        ok = isinstance(parts, list) and all(
            isinstance(p, dict) and p.get("type") == part_type and isinstance(p.get("text"), str)
            for p in parts
        )
        if not ok:
            raise InvalidRequest(f"'{param}.{key}' must be an array of {part_type} parts",
                                 param="input")  # fmt: skip
        texts[key] = "\n\n".join(p["text"] for p in parts)
    return texts["content"] or texts["summary"]


def _text(content: Any, param: str) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidRequest(f"'{param}' must be a string or an array of parts", param="input")
    texts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_image", "input_file", "input_audio"):
            raise UnsupportedParameter(
                f"'{param}[{j}]': the models here read text only; {kind} is not supported",
                param="input",
            )
        if kind not in _TEXT_PARTS or not isinstance(part.get("text", part.get("refusal")), str):
            raise InvalidRequest(f"'{param}[{j}]' must be a text part", param="input")
        texts.append(part.get("text", part.get("refusal")))
    return "".join(texts)


def _text_format(value: Any) -> Constraint | None:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) - {"format", "verbosity"}:
        raise InvalidRequest("'text' takes format and verbosity", param="text")
    if value.get("verbosity") not in (None, "medium"):
        raise UnsupportedParameter("'text.verbosity' other than medium is not supported",
                                   param="text")  # fmt: skip
    fmt = value.get("format")
    if fmt is None or fmt == {"type": "text"}:
        return None
    if not isinstance(fmt, dict):
        raise InvalidRequest("'text.format' must be an object", param="text")
    if fmt.get("type") == "json_schema":  # the flat shape, as chat's nested one
        inner = {k: v for k, v in fmt.items() if k != "type"}
        return parse_response_format({"type": "json_schema", "json_schema": inner})
    return parse_response_format(fmt)
