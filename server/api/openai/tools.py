"""``tools``, ``tool_choice`` and tool-related messages parsed at the route boundary.

The model writes a call as ``<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>``
(Qwen2.5 and Hermes-style templates; parsed by :mod:`server.engine.toolcalls`). ``required`` or
a named function forces such a call with a grammar; ``none`` leaves the tools out.
``parallel_tool_calls: false`` allows one call: the request stops at the first
``</tool_call>`` and the parser keeps only the first call.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from backends.base import Constraint, Tool, ToolCall
from server.api.openai.formats import schema_text
from server.engine.toolcalls import CALL_CLOSE, CALL_OPEN
from server.errors import InvalidRequest

MAX_TOOLS = 128
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass(frozen=True, slots=True)
class ToolChoice:
    tools: tuple[Tool, ...]  # rendered into the prompt; empty for "none"
    constraint: Constraint | None  # forces a call: "required" or a named function
    parallel: bool = True  # False: at most one call, generation stops at its end


def parse_tools(tools: Any, choice: Any, parallel: Any) -> ToolChoice | None:
    if tools is None or tools == []:  # some clients (editors) always send the field
        if choice not in (None, "none", "auto"):
            raise InvalidRequest("'tool_choice' needs 'tools'", param="tool_choice")
        return None
    if not isinstance(tools, list) or len(tools) > MAX_TOOLS:
        raise InvalidRequest(
            f"'tools' must be an array of at most {MAX_TOOLS} tools", param="tools"
        )
    if parallel is not None and not isinstance(parallel, bool):
        raise InvalidRequest("'parallel_tool_calls' must be a boolean", param="parallel_tool_calls")
    parsed = tuple(_tool(i, t) for i, t in enumerate(tools))
    if len({t.name for t in parsed}) != len(parsed):
        raise InvalidRequest("tool names must be unique", param="tools")
    several = parallel is not False
    if choice in (None, "auto"):
        return ToolChoice(parsed, None, parallel=several)
    if choice == "none":
        return ToolChoice((), None)
    if choice == "required":
        return ToolChoice(parsed, _forced(parsed), parallel=several)
    name = _named(choice)
    chosen = tuple(t for t in parsed if t.name == name)
    if not chosen:
        raise InvalidRequest(f"'tool_choice' names {name!r}, not in 'tools'", param="tool_choice")
    return ToolChoice(parsed, _forced(chosen), parallel=several)


def _named(choice: Any) -> str:
    ok = isinstance(choice, dict) and choice.get("type") == "function"
    function = choice.get("function") if ok else None
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(name, str):
        raise InvalidRequest(
            "'tool_choice' must be none, auto, required or "
            '{"type": "function", "function": {"name": ...}}',
            param="tool_choice",
        )
    return name


def _tool(i: int, value: Any) -> Tool:
    param = f"tools[{i}]"
    function = value.get("function") if isinstance(value, dict) else None
    if not isinstance(function, dict) or value.get("type") != "function":
        raise InvalidRequest(
            f'each of \'tools\' must be {{"type": "function", "function": ...}}; {param} is not',
            param="tools",
        )
    name, description = function.get("name"), function.get("description", "")
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidRequest(
            f"'{param}.function.name' must be 1-64 of a-z, A-Z, 0-9, _ . -", param="tools"
        )
    if not isinstance(description, str):
        raise InvalidRequest(f"'{param}.function.description' must be a string", param="tools")
    parameters = function.get("parameters", {"type": "object", "properties": {}})
    return Tool(name, description, schema_text(parameters, "tools"))


def _forced(tools: tuple[Tool, ...]) -> Constraint:
    """A grammar for one call of one of ``tools``, in the model's tags."""
    calls = [
        {
            "type": "object",
            "properties": {"name": {"const": t.name}, "arguments": json.loads(t.parameters)},
            "required": ["name", "arguments"],
        }
        for t in tools
    ]
    schema = calls[0] if len(calls) == 1 else {"anyOf": calls}
    return Constraint(schema_text(schema, "tools"), CALL_OPEN + "\n", "\n" + CALL_CLOSE)


def parse_tool_calls(value: Any, param: str) -> tuple[ToolCall, ...]:
    """An assistant message's ``tool_calls``, sent back in the next turn."""
    if not isinstance(value, list):
        raise InvalidRequest(f"'{param}' must be an array", param=param)
    calls = []
    for j, call in enumerate(value):
        function = call.get("function") if isinstance(call, dict) else None
        ok = isinstance(function, dict) and isinstance(call.get("id", ""), str)
        name = function.get("name") if ok else None  # type: ignore[union-attr]
        arguments = function.get("arguments", "{}") if ok else None  # type: ignore[union-attr]
        if not isinstance(name, str) or not isinstance(arguments, str):
            raise InvalidRequest(
                f'\'{param}[{j}]\' must be {{"id", "type": "function", "function": '
                '{"name", "arguments": a JSON string}}',
                param=param,
            )
        calls.append(ToolCall(call.get("id", ""), name, arguments))
    return tuple(calls)
