"""Chat templates rendered in an immutable Jinja sandbox.

Templates come from model files (GGUF metadata, tokenizer configs), which are untrusted
input: the sandbox blocks attribute access to Python internals, and rendered output is
capped in size.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NoReturn

from jinja2 import TemplateError as JinjaTemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from backends.base import ChatMessage, TemplateError

MAX_RENDERED_CHARS = 4_000_000


def _raise_exception(message: str) -> NoReturn:
    raise TemplateError(f"chat template: {message}")


def _tojson(value: Any, indent: int | None = None, **_: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=indent)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


class ChatTemplate:
    """A compiled chat template. Compile errors raise :class:`TemplateError`."""

    def __init__(self, source: str, *, bos_token: str = "", eos_token: str = "") -> None:
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.filters["tojson"] = _tojson
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = _strftime_now
        try:
            self._template = env.from_string(source)
        except JinjaTemplateError as exc:
            raise TemplateError(f"chat template does not compile: {exc}") from exc
        self.source = source
        self.bos_token = bos_token
        self.eos_token = eos_token

    def render(self, messages: Sequence[ChatMessage], **extra: Any) -> str:
        """Render with the generation prompt appended."""
        context = {
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "add_generation_prompt": True,
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
            **extra,
        }
        try:
            text = self._template.render(context)
        except TemplateError:
            raise
        except Exception as exc:  # a template from a model file may fail in any way
            raise TemplateError(f"chat template failed: {type(exc).__name__}: {exc}") from exc
        if len(text) > MAX_RENDERED_CHARS:
            raise TemplateError("chat template output exceeds the size limit")
        return text
