"""The formats by name, and a forced call in each model's own format: what the grammar
makes the model write is read back by the format's parser as one valid call."""

from __future__ import annotations

import json
from typing import Any

import pytest

from backends.base import SamplingParams
from server.api import toolchoice
from server.engine.parsers import (
    REASONING_FORMATS,
    TOOL_FORMATS,
    UnknownFormat,
    call_end,
    forced_call,
    matches,
    reasoning_parser,
    tool_parser,
)
from server.engine.requests import GenerationRequest, ToolCallDelta
from tests.unit.parsing import TOOLS, WEATHER


def test_the_names() -> None:
    assert {"think", "harmony"} == REASONING_FORMATS
    assert {"hermes", "qwen3_coder", "llama3", "mistral", "deepseek", "harmony"} == TOOL_FORMATS
    for name in REASONING_FORMATS:
        assert reasoning_parser(name).feed("") == []
    for name in TOOL_FORMATS:
        assert tool_parser(name, TOOLS, False).calls == 0


@pytest.mark.parametrize(
    "call", [lambda: reasoning_parser("hermes"), lambda: tool_parser("think", TOOLS)]
)
def test_an_unknown_name_is_a_clear_error(call: Any) -> None:
    with pytest.raises(UnknownFormat, match="known: "):
        call()


def _instance(schema: Any) -> Any:
    """A value of the forced call's schema: a call of get_weather for Paris."""
    one = schema["anyOf"][0] if "anyOf" in schema else schema
    props = one.get("properties", {})
    if "const" in props.get("name", {}):
        key = next(k for k in props if k != "name")
        return {"name": props["name"]["const"], key: {"city": "Paris"}}
    return {"city": "Paris"}


@pytest.mark.parametrize("tools", [(WEATHER,), TOOLS])
@pytest.mark.parametrize("name", sorted(TOOL_FORMATS))
def test_a_forced_call_reads_back_as_one_valid_call(name: str, tools: Any) -> None:
    forced = forced_call(name, tools)
    if forced is None:  # the name outside the JSON: one tool only
        assert name in ("deepseek", "harmony") and len(tools) > 1
        return
    value = _instance(forced.schema)
    assert matches(value, forced.schema)
    parser = tool_parser(name, tools)
    pieces = parser.feed(forced.before + json.dumps(value) + forced.after) + parser.flush()
    (call,) = [p for p in pieces if isinstance(p, ToolCallDelta)]
    assert call.call.name == "get_weather" and json.loads(call.call.arguments) == {"city": "Paris"}
    assert parser.failures == 0


def test_call_ends() -> None:
    assert call_end("hermes") == call_end("qwen3_coder") == "</tool_call>"
    assert call_end("deepseek") == "<｜tool▁call▁end｜>" and call_end("harmony") == "<|call|>"
    assert call_end("llama3") is call_end("mistral") is None


GEN = GenerationRequest("r", "m", SamplingParams(), None, (), 0.0, prompt="x")


def test_hermes_is_the_default_and_unchanged() -> None:
    choice = toolchoice.choose((WEATHER,), toolchoice.Mode.ANY, parallel=False)
    gen = toolchoice.apply(GEN, choice)
    constraint = gen.sampling.constraint
    assert constraint is not None and gen.stop == ("</tool_call>",)
    assert (constraint.before, constraint.after) == ("<tool_call>\n", "\n</tool_call>")
    assert json.loads(constraint.schema or "")["properties"]["name"] == {"const": "get_weather"}
    assert gen.constraint_param == "tools" and gen.parallel_tool_calls is False


def test_the_models_own_format() -> None:
    named = toolchoice.choose(TOOLS, toolchoice.Mode.NAMED, name="get_weather", parallel=False)
    gen = toolchoice.apply(GEN, named, "mistral")
    assert gen.sampling.constraint is not None and gen.stop == ()
    assert gen.sampling.constraint.before == "[TOOL_CALLS]get_weather[ARGS]"
    gen = toolchoice.apply(GEN, named, "deepseek")
    assert gen.stop == ("<｜tool▁call▁end｜>",) and gen.sampling.constraint is not None
    anyone = toolchoice.choose(TOOLS, toolchoice.Mode.ANY)
    assert toolchoice.apply(GEN, anyone, "harmony").sampling.constraint is None
    assert toolchoice.apply(GEN, anyone, "llama3").sampling.constraint is not None
