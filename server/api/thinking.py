"""What a request asks of a reasoning model, parsed the same way in every dialect:
an effort level (``reasoning_effort``, Responses' ``reasoning.effort``, Anthropic's
``output_config.effort``, Ollama's ``think``) and OpenAI chat's ``chat_template_kwargs``,
the extra variables its chat template is rendered with.

Whether the model can honour it is the engine's to say: a request that demands thinking
(``mode="on"``) of a model without a reasoning mode is refused there; one that only
allows it answers normally.
"""

from __future__ import annotations

import json
import re
from typing import Any

from server.engine.requests import Thinking
from server.errors import InvalidRequest

# Every dialect's level -> the engine's: "none" asks for no thinking at all; the levels
# past "high" (Anthropic's xhigh and max) are the highest a template takes.
EFFORTS: dict[str, str | None] = {
    "none": None, "minimal": "low", "low": "low", "medium": "medium", "high": "high",
    "xhigh": "high", "max": "high",
}  # fmt: skip
MAX_TEMPLATE_KWARGS = 32
MAX_TEMPLATE_KWARGS_CHARS = 64 * 1024
# What the server itself renders the template with: a request cannot replace it.
RESERVED = {"messages", "tools", "add_generation_prompt", "bos_token", "eos_token"}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


def effort(value: Any, param: str, levels: tuple[str, ...] = tuple(EFFORTS)) -> Thinking:
    """An effort level as the engine's :class:`Thinking`: ``none`` turns thinking off;
    the rest leave it to the model (mode ``auto``) at that level."""
    if value is None:
        return Thinking()
    if value not in levels:
        raise InvalidRequest(f"'{param}' must be one of {', '.join(levels)}", param=param)
    level = EFFORTS[value]
    return Thinking(mode="off") if level is None else Thinking(effort=level)


def template_kwargs(value: Any, param: str = "chat_template_kwargs") -> tuple[tuple[str, str], ...]:
    """An object of template variables, each value kept as JSON text; the names are
    identifiers, and none of them one the server renders the template with."""
    if value is None:
        return ()
    if not isinstance(value, dict) or len(value) > MAX_TEMPLATE_KWARGS:
        raise InvalidRequest(
            f"'{param}' must be an object of at most {MAX_TEMPLATE_KWARGS} variables",
            param=param,
        )
    pairs = []
    for name, setting in value.items():
        if not _NAME.match(name) or name in RESERVED:
            raise InvalidRequest(
                f"'{param}': {name[:64]!r} is not a template variable a request may set "
                f"(an identifier, not one of {', '.join(sorted(RESERVED))})",
                param=param,
            )
        pairs.append((name, json.dumps(setting, ensure_ascii=False)))
    if sum(len(text) for _, text in pairs) > MAX_TEMPLATE_KWARGS_CHARS:
        raise InvalidRequest(
            f"'{param}' exceeds {MAX_TEMPLATE_KWARGS_CHARS} characters", param=param
        )
    return tuple(pairs)


def switched(thinking: Thinking, enabled: Any, name: str, param: str | None = None) -> Thinking:
    """``thinking`` turned on or off by a boolean (``enable_thinking``, Ollama's
    ``think``); None leaves it as it is. Turning it on where the effort said ``none``
    contradicts the request."""
    if enabled is None:
        return thinking
    if not isinstance(enabled, bool):
        raise InvalidRequest(f"'{name}' must be a boolean", param=param or name)
    if enabled and thinking.mode == "off":
        raise InvalidRequest(f"'{name}' asks for thinking that effort 'none' turns off",
                             param=param or name)  # fmt: skip
    return Thinking("on" if enabled else "off", thinking.effort, thinking.budget_tokens)
