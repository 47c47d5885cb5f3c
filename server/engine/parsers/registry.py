"""The output formats by name (models.toml's ``reasoning_parser`` and ``tool_parser``,
and what a backend detects from the chat template): their parsers, how a grammar forces
a call in each, and the text that ends a call."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from backends.base import Tool
from server.engine.parsers import deepseek, harmony, hermes, llama3, mistral, qwen3_coder
from server.engine.parsers.base import ForcedCall, Parser
from server.engine.parsers.deepseek import DeepSeekParser
from server.engine.parsers.harmony import HarmonyParser
from server.engine.parsers.hermes import HermesParser
from server.engine.parsers.llama3 import Llama3Parser
from server.engine.parsers.mistral import MistralParser
from server.engine.parsers.qwen3_coder import Qwen3CoderParser
from server.engine.parsers.think import ThinkParser


class UnknownFormat(ValueError):
    """A format name no parser has."""


@dataclass(frozen=True, slots=True)
class ToolFormat:
    parser: Callable[[Sequence[Tool], bool], Parser]
    forced: Callable[[Sequence[Tool]], ForcedCall | None]
    end: str | None  # the text that ends one call: a stop where one call is wanted


def _harmony(tools: Sequence[Tool], parallel: bool) -> Parser:
    return HarmonyParser(tools, parallel=parallel)


def _tagged(cls: Callable[..., Parser]) -> Callable[[Sequence[Tool], bool], Parser]:
    return lambda tools, parallel: cls(tools, parallel=parallel)


_TOOLS = {
    "hermes": ToolFormat(_tagged(HermesParser), hermes.forced, hermes.CALL_END),
    "qwen3_coder": ToolFormat(_tagged(Qwen3CoderParser), qwen3_coder.forced, qwen3_coder.CALL_END),
    "llama3": ToolFormat(_tagged(Llama3Parser), llama3.forced, llama3.CALL_END),
    "mistral": ToolFormat(_tagged(MistralParser), mistral.forced, mistral.CALL_END),
    "deepseek": ToolFormat(_tagged(DeepSeekParser), deepseek.forced, deepseek.CALL_END),
    "harmony": ToolFormat(_harmony, harmony.forced, harmony.CALL_END),
}
REASONING_FORMATS = frozenset({"think", "harmony"})
TOOL_FORMATS = frozenset(_TOOLS)


def reasoning_parser(name: str, *, reasoning_open: bool = False) -> Parser:
    """The reader of a model's reasoning: its text in, reasoning and content out."""
    if name == "think":
        return ThinkParser(reasoning_open=reasoning_open)
    if name == "harmony":
        return HarmonyParser(reasoning_open=reasoning_open)
    raise _unknown("reasoning", name, REASONING_FORMATS)


def tool_parser(name: str, tools: Sequence[Tool], parallel: bool = True) -> Parser:
    """The reader of a model's tool calls in its content; ``parallel`` False: the first
    call only."""
    return _tool_format(name).parser(tools, parallel)


def forced_call(name: str, tools: Sequence[Tool]) -> ForcedCall | None:
    """How a grammar forces one call of one of ``tools`` in the format ``name``; None
    where the format cannot say it as JSON between two texts (the name outside the JSON,
    with more than one tool to choose from)."""
    return _tool_format(name).forced(tools)


def call_end(name: str) -> str | None:
    """The text that ends a call in the format ``name``, None where nothing does."""
    return _tool_format(name).end


def _tool_format(name: str) -> ToolFormat:
    found = _TOOLS.get(name)
    if found is None:
        raise _unknown("tool", name, TOOL_FORMATS)
    return found


def _unknown(kind: str, name: str, known: frozenset[str]) -> UnknownFormat:
    return UnknownFormat(f"unknown {kind} format {name!r}; known: {', '.join(sorted(known))}")
