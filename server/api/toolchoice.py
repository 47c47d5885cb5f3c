"""Which tools a request offers the model and whether it must call one: the part of
``tools`` / ``tool_choice`` that every dialect shares once its own shape is parsed.

The model writes a call in its own format (:mod:`server.engine.parsers`; Hermes'
``<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`` where none is
known). A forced call (OpenAI's ``required`` or a named function, Anthropic's ``any`` or
``tool``) is such a call under a grammar; where the format cannot force a choice among
several tools (it writes the name outside the JSON), the call is left to the model.
``none`` leaves the tools out of the prompt. With parallel calls off, the request stops
where the format's first call ends (Hermes' ``</tool_call>``), and the parser keeps one
call in any case.
"""

from __future__ import annotations

import enum
import json
import re
from dataclasses import dataclass, replace
from typing import Any

from backends.base import Constraint, Tool, ToolCall
from server.api.fields import schema_text
from server.engine.parsers import call_end, forced_call
from server.engine.requests import GenerationRequest
from server.errors import InvalidRequest

MAX_TOOLS = 128
NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class Mode(enum.Enum):
    AUTO = "auto"  # the model decides
    NONE = "none"  # no tools offered
    ANY = "any"  # a call to one of the tools is forced
    NAMED = "named"  # a call to the named tool is forced


@dataclass(frozen=True, slots=True)
class ToolChoice:
    tools: tuple[Tool, ...]  # rendered into the prompt; empty for "none"
    forced: tuple[Tool, ...] = ()  # a call of one of these is forced; empty: none is
    parallel: bool = True  # False: at most one call, generation stops at its end


def choose(
    tools: tuple[Tool, ...], mode: Mode, *, name: str | None = None, parallel: bool = True,
    param: str = "tool_choice",
) -> ToolChoice:  # fmt: skip
    if len({t.name for t in tools}) != len(tools):
        raise InvalidRequest("tool names must be unique", param="tools")
    if mode is Mode.NONE:
        return ToolChoice(())
    if mode is Mode.AUTO:
        return ToolChoice(tools, parallel=parallel)
    if mode is Mode.ANY:
        return ToolChoice(tools, tools, parallel=parallel)
    chosen = tuple(t for t in tools if t.name == name)
    if not chosen:
        raise InvalidRequest(f"'{param}' names {name!r}, not in 'tools'", param=param)
    return ToolChoice(tools, chosen, parallel=parallel)


def check_name(name: object, param: str) -> str:
    if not isinstance(name, str) or not NAME.match(name):
        raise InvalidRequest(f"'{param}' must be 1-64 of a-z, A-Z, 0-9, _ . -", param="tools")
    return name


def arguments_object(call: ToolCall) -> dict[str, Any]:
    """A call's arguments as an object, for the dialects that send one (Anthropic's
    ``input``, Ollama's ``arguments``); text that is no JSON object comes as written,
    under ``"arguments"``."""
    try:
        arguments = json.loads(call.arguments)
    except ValueError:
        arguments = None
    if not isinstance(arguments, dict):
        return {"arguments": call.arguments}
    return arguments


def forced(tools: tuple[Tool, ...], tool_format: str = "hermes") -> Constraint | None:
    """A grammar for one call of one of ``tools``, in the model's format; None where
    the format cannot force it."""
    call = forced_call(tool_format, tools)
    if call is None:
        return None
    return Constraint(schema_text(call.schema, "tools"), call.before, call.after)


def apply(
    gen: GenerationRequest, choice: ToolChoice | None, tool_format: str = "hermes"
) -> GenerationRequest:
    """``gen`` with the tools offered, one call only where parallel calls are off, and
    the forced call's grammar, in the model's tool format."""
    if choice is None:
        return gen
    gen = replace(gen, tools=choice.tools, parallel_tool_calls=choice.parallel)
    end = call_end(tool_format)
    if not choice.parallel and end is not None:  # one call: stop at its end
        gen = replace(gen, stop=(*gen.stop, end))
    constraint = forced(choice.forced, tool_format) if choice.forced else None
    if constraint is not None:
        if gen.sampling.constraint is not None:
            raise InvalidRequest(
                "a forced tool call and structured output cannot be combined",
                param="tool_choice",
            )
        sampling = replace(gen.sampling, constraint=constraint)
        gen = replace(gen, sampling=sampling, constraint_param="tools")
    return gen
