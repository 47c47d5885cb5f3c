"""OpenAI's ``tools``, ``tool_choice`` and ``parallel_tool_calls``, and an assistant
message's ``tool_calls``, parsed at the route boundary; what the choice means for the
model is :mod:`server.api.toolchoice`, shared with the other dialects.
"""

from __future__ import annotations

from typing import Any

from backends.base import Tool, ToolCall
from server.api.fields import schema_text
from server.api.toolchoice import MAX_TOOLS, Mode, ToolChoice, check_name, choose
from server.errors import InvalidRequest


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
    several = parallel is not False
    modes = {None: Mode.AUTO, "auto": Mode.AUTO, "none": Mode.NONE, "required": Mode.ANY}
    if isinstance(choice, str | None) and choice in modes:
        return choose(parsed, modes[choice], parallel=several)
    return choose(parsed, Mode.NAMED, name=_named(choice), parallel=several)


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
    name = check_name(function.get("name"), f"{param}.function.name")
    description = function.get("description", "")
    if not isinstance(description, str):
        raise InvalidRequest(f"'{param}.function.description' must be a string", param="tools")
    parameters = function.get("parameters", {"type": "object", "properties": {}})
    return Tool(name, description, schema_text(parameters, "tools"))


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
