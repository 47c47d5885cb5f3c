"""OpenAI chat's ``messages`` parsed into chat messages: roles, text or text parts, an
assistant's tool calls, and its reasoning (``reasoning_content`` or ``reasoning``, as
clients differ), which is kept apart from its text."""

from __future__ import annotations

from typing import Any

from backends.base import ChatMessage
from server.api.openai.tools import parse_tool_calls
from server.errors import InvalidRequest, UnsupportedParameter

MAX_MESSAGES = 1024
# All message text (or a completion prompt) together; the 8 MiB body limit bounds it too.
MAX_PROMPT_CHARS = 8 * 1024 * 1024
REASONING_KEYS = ("reasoning_content", "reasoning")
_ROLE_KEYS = {"assistant": {"tool_calls", *REASONING_KEYS}, "tool": {"tool_call_id"}}
_ROLES = {"system", "developer", "user", "assistant", "tool"}


def parse_messages(value: Any) -> tuple[ChatMessage, ...]:
    if value is None:
        raise InvalidRequest(
            "'messages' is required", param="messages", code="missing_required_parameter"
        )
    if not isinstance(value, list) or not value:
        raise InvalidRequest("'messages' must be a non-empty array", param="messages")
    if len(value) > MAX_MESSAGES:
        raise InvalidRequest(
            f"'messages' allows at most {MAX_MESSAGES} messages", param="messages", code="too_long"
        )
    messages = tuple(_message(i, m) for i, m in enumerate(value))
    if sum(len(m.content) + len(m.reasoning or "") for m in messages) > MAX_PROMPT_CHARS:
        raise InvalidRequest(
            f"the messages exceed {MAX_PROMPT_CHARS} characters in all",
            param="messages",
            code="too_long",
        )
    return messages


def _message(i: int, value: Any) -> ChatMessage:
    param = f"messages[{i}]"
    if not isinstance(value, dict):
        raise InvalidRequest(f"'{param}' must be an object", param=param)
    role = value.get("role")
    if role not in _ROLES:
        allowed = ", ".join(sorted(_ROLES))
        raise InvalidRequest(f"'{param}.role' must be one of {allowed}", param=f"{param}.role")
    keys = {"role", "content", "name"} | _ROLE_KEYS.get(role, set())
    for key in value:
        if key not in keys:
            raise UnsupportedParameter(f"'{param}.{key}' is not supported", param=f"{param}.{key}")
    role = "system" if role == "developer" else role
    if role == "assistant":
        return _assistant(param, value)
    call_id = value.get("tool_call_id")
    if role == "tool" and not isinstance(call_id, str):
        raise InvalidRequest(f"'{param}.tool_call_id' must be a string", param=param)
    name = value.get("name") if isinstance(value.get("name"), str) else None
    content = _content(value.get("content"), f"{param}.content")
    return ChatMessage(role, content, tool_call_id=call_id, name=name)


def _assistant(param: str, value: dict[str, Any]) -> ChatMessage:
    """An earlier answer: its text (none where it called tools), its calls, and its
    reasoning, kept apart from the text."""
    content, calls = value.get("content"), value.get("tool_calls")
    text = "" if content is None else _content(content, f"{param}.content")
    reasoning = [value[k] for k in REASONING_KEYS if value.get(k) is not None]
    if not all(isinstance(r, str) for r in reasoning):
        raise InvalidRequest(f"'{param}.reasoning_content' must be a string", param=param)
    name = value.get("name") if isinstance(value.get("name"), str) else None
    return ChatMessage(
        "assistant", text, () if calls is None else parse_tool_calls(calls, f"{param}.tool_calls"),
        name=name, reasoning=reasoning[0] if reasoning else None,
    )  # fmt: skip


def _content(value: Any, param: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = []
        for j, part in enumerate(value):
            if not isinstance(part, dict) or part.get("type") != "text":
                raise UnsupportedParameter(
                    f"'{param}[{j}]': only text content parts are supported", param=param
                )
            text = part.get("text")
            if not isinstance(text, str):
                raise InvalidRequest(f"'{param}[{j}].text' must be a string", param=param)
            parts.append(text)
        return "".join(parts)
    raise InvalidRequest(f"'{param}' must be a string or an array of text parts", param=param)
