"""Chat templates rendered in an immutable Jinja sandbox.

Templates come from model files (GGUF metadata, tokenizer configs), which are untrusted
input: the sandbox blocks attribute access to Python internals, and each render has a
budget of operations, time and output size (``backends/sandbox.py``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, NoReturn

from jinja2 import TemplateError as JinjaTemplateError
from jinja2 import meta

from backends.base import ChatMessage, TemplateError, Tool, ToolCall
from backends.sandbox import MAX_CHARS, Budget, BudgetedEnvironment

MAX_RENDERED_CHARS = MAX_CHARS
# What every render gives a template; the rest it reads are its own variables.
_GIVEN = frozenset({"messages", "tools", "add_generation_prompt", "bos_token", "eos_token",
                    "raise_exception", "strftime_now"})  # fmt: skip


def _raise_exception(message: str) -> NoReturn:
    raise TemplateError(f"chat template: {message}")


def _tojson(value: Any, indent: int | None = None, **_: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=indent)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


class ChatTemplate:
    """A compiled chat template. Compile errors raise :class:`TemplateError`."""

    def __init__(self, source: str, *, bos_token: str = "", eos_token: str = "") -> None:
        env = BudgetedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.add_filter("tojson", _tojson)
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = _strftime_now
        try:
            self._template = env.compile_source(source)
        except JinjaTemplateError as exc:
            raise TemplateError(f"chat template does not compile: {exc}") from exc
        self.source = source
        self._env = env
        self.bos_token = bos_token
        self.eos_token = eos_token
        # What the template reads beyond what render always gives it (enable_thinking,
        # reasoning_effort, ...).
        self.variables = frozenset(meta.find_undeclared_variables(env.parse(source))) - _GIVEN

    def render(
        self,
        messages: Sequence[ChatMessage],
        tools: Sequence[Tool] = (),
        variables: Mapping[str, Any] | None = None,
    ) -> str:
        """Render with the generation prompt appended; ``tools`` in the Hugging Face
        shape (``tools`` left undefined when there are none, as templates test that).
        ``variables`` are extra template variables; they cannot replace the messages,
        the tools, the generation prompt or the special tokens."""
        context = {**(variables or {})}
        if tools:
            context["tools"] = [_tool(t) for t in tools]
        context.update(
            messages=[_message(m) for m in messages],
            add_generation_prompt=True,
            bos_token=self.bos_token,
            eos_token=self.eos_token,
        )
        try:
            text = self._env.render(lambda: self._template.generate(context), Budget())
        except TemplateError:
            raise
        except Exception as exc:  # a template from a model file may fail in any way
            raise TemplateError(f"chat template failed: {type(exc).__name__}: {exc}") from exc
        if len(text) > MAX_RENDERED_CHARS:
            raise TemplateError("chat template output exceeds the size limit")
        return text


def _message(m: ChatMessage) -> dict[str, Any]:
    message: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.reasoning is not None:
        # Qwen3's and DeepSeek's templates read reasoning_content, gpt-oss's thinking;
        # each keeps it (the turn in progress) or drops it (earlier turns) as trained.
        message["reasoning_content"] = m.reasoning
        message["thinking"] = m.reasoning
    if m.tool_calls:
        message["tool_calls"] = [_call(c) for c in m.tool_calls]
    if m.tool_call_id is not None:
        message["tool_call_id"] = m.tool_call_id
    if m.name is not None:
        message["name"] = m.name
    return message


def _call(call: ToolCall) -> dict[str, Any]:
    # Templates write arguments with tojson: a mapping, not the JSON text, where it parses.
    try:
        arguments: Any = json.loads(call.arguments)
    except ValueError:
        arguments = call.arguments
    function = {"name": call.name, "arguments": arguments}
    return {"id": call.id, "type": "function", "function": function}


def _tool(tool: Tool) -> dict[str, Any]:
    function = {"name": tool.name, "description": tool.description}
    function["parameters"] = json.loads(tool.parameters)
    return {"type": "function", "function": function}
