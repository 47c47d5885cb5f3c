"""The Responses API's ``tools`` and ``tool_choice`` parsed at the route boundary.

Function tools are offered, a ``namespace``'s as ``namespace.name``. Tools OpenAI runs on
its own servers are left out and named back to the client, not refused: refusing them
would shut Codex out, which always sends one.
"""

from __future__ import annotations

from typing import Any

from backends.base import Tool
from server.api import fields as f
from server.api import toolchoice
from server.errors import InvalidRequest, UnsupportedParameter

# Tools OpenAI runs on its own servers: never offered to the model here.
HOSTED_TOOLS = {
    "web_search", "web_search_preview", "web_search_2025_08_26", "file_search",
    "code_interpreter", "image_generation", "computer_use_preview", "computer_use", "mcp",
    "local_shell", "tool_search",
}  # fmt: skip


def parse_tools(value: Any) -> tuple[tuple[Tool, ...], tuple[str, ...]]:
    if value is None:
        return (), ()
    if not isinstance(value, list):
        raise InvalidRequest("'tools' must be an array", param="tools")
    tools: list[Tool] = []
    hosted: list[str] = []
    for i, tool in enumerate(value):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind in HOSTED_TOOLS:
            hosted.append(kind)
        elif kind == "namespace":
            space = toolchoice.check_name(tool.get("name"), f"tools[{i}].name")
            inner = tool.get("tools")
            if not isinstance(inner, list):
                raise InvalidRequest(f"'tools[{i}].tools' must be an array", param="tools")
            tools += [_function(f"tools[{i}].tools[{j}]", t, space) for j, t in enumerate(inner)]
        elif kind == "function":
            tools.append(_function(f"tools[{i}]", tool))
        else:
            raise UnsupportedParameter(f"'tools[{i}]': tools of type {kind!r} are not supported",
                                       param="tools")  # fmt: skip
    if len(tools) > toolchoice.MAX_TOOLS:
        raise InvalidRequest(f"at most {toolchoice.MAX_TOOLS} tools", param="tools")
    return tuple(tools), tuple(hosted)


def _function(param: str, tool: Any, namespace: str | None = None) -> Tool:
    if not isinstance(tool, dict) or tool.get("type") != "function":
        raise UnsupportedParameter(f"'{param}' must be a function tool", param="tools")
    name = toolchoice.check_name(tool.get("name"), f"{param}.name")
    description = tool.get("description") or ""
    if not isinstance(description, str):
        raise InvalidRequest(f"'{param}.description' must be a string", param="tools")
    parameters = tool.get("parameters") or {"type": "object", "properties": {}}
    full = f"{namespace}.{name}" if namespace else name
    return Tool(full, description, f.schema_text(parameters, "tools"))


def parse_choice(tools: tuple[Tool, ...], fields: dict[str, Any]) -> toolchoice.ToolChoice | None:
    choice = fields.get("tool_choice")
    parallel = fields.get("parallel_tool_calls") is not False
    if not tools:
        if choice not in (None, "auto", "none"):
            raise InvalidRequest("'tool_choice' needs 'tools'", param="tool_choice")
        return None
    modes = {None: toolchoice.Mode.AUTO, "auto": toolchoice.Mode.AUTO,
             "none": toolchoice.Mode.NONE, "required": toolchoice.Mode.ANY}  # fmt: skip
    if isinstance(choice, str | None) and choice in modes:
        return toolchoice.choose(tools, modes[choice], parallel=parallel)
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = choice.get("name")
        return toolchoice.choose(tools, toolchoice.Mode.NAMED, name=name, parallel=parallel)
    raise UnsupportedParameter(
        '\'tool_choice\' must be auto, none, required or {"type": "function", "name"}',
        param="tool_choice",
    )
