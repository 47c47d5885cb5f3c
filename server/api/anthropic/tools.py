"""Anthropic's ``tools`` and ``tool_choice`` parsed at the route boundary; what the
choice means for the model is :mod:`server.api.toolchoice`, shared with the other
dialects. Only custom tools are offered: those Anthropic runs on its own servers are
refused, naming the tool."""

from __future__ import annotations

from typing import Any

from backends.base import Tool
from server.api import fields as f
from server.api import toolchoice
from server.api.fields import schema_text
from server.errors import InvalidRequest, UnsupportedParameter


def parse_tools(value: Any, choice: Any) -> toolchoice.ToolChoice | None:
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
