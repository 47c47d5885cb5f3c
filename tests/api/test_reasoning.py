"""What each dialect's reasoning fields become in the internal request (``thinking``,
``template_kwargs``, an earlier turn's ``reasoning``), and each bad value refused in the
dialect's own error shape."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from backends.base import SamplingParams
from server.api.anthropic import schemas as anthropic
from server.api.ollama import schemas as ollama
from server.api.openai import schemas as chat
from server.api.responses import schemas as responses
from server.engine.requests import GenerationRequest, Thinking
from tests.api.test_api import CHAT, assert_error, chat_body
from tests.api.test_responses import RESPONSES

DEFAULTS = SamplingParams()
ASK = [{"role": "user", "content": "Why?"}]


def openai_gen(**fields: Any) -> GenerationRequest:
    return chat.parse_chat(
        {"model": "m", "messages": ASK, **fields}, DEFAULTS, model="m"
    ).generation


# --- OpenAI chat ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "thinking"),
    [
        ({}, Thinking()),
        ({"reasoning_effort": "high"}, Thinking(effort="high")),
        ({"reasoning_effort": "minimal"}, Thinking(effort="low")),
        ({"reasoning_effort": "xhigh"}, Thinking(effort="high")),
        ({"reasoning_effort": "none"}, Thinking(mode="off")),
        ({"chat_template_kwargs": {"enable_thinking": True}}, Thinking(mode="on")),
        ({"chat_template_kwargs": {"enable_thinking": False}}, Thinking(mode="off")),
        ({"chat_template_kwargs": {"enable_thinking": True}, "reasoning_effort": "low"},
         Thinking(mode="on", effort="low")),
        ({"chat_template_kwargs": {"enable_thinking": False}, "reasoning_effort": "none"},
         Thinking(mode="off")),
    ],
)  # fmt: skip
def test_openai_thinking_fields(fields: dict[str, Any], thinking: Thinking) -> None:
    assert openai_gen(**fields).thinking == thinking


def test_chat_template_kwargs_travel_as_json_text() -> None:
    kwargs = {"enable_thinking": False, "reasoning_effort": "low", "tags": ["a", 1]}
    gen = openai_gen(chat_template_kwargs=kwargs)
    assert gen.template_kwargs == (
        ("enable_thinking", "false"), ("reasoning_effort", '"low"'), ("tags", '["a", 1]')
    )  # fmt: skip
    assert openai_gen().template_kwargs == ()


@pytest.mark.parametrize("key", ["reasoning_content", "reasoning"])
def test_an_earlier_turns_reasoning_is_kept_apart_from_its_text(key: str) -> None:
    said = {"role": "assistant", "content": "42.", key: "Six times seven."}
    gen = openai_gen(messages=[*ASK, said, {"role": "user", "content": "Sure?"}])
    assert gen.messages is not None
    turn = gen.messages[1]
    assert (turn.content, turn.reasoning) == ("42.", "Six times seven.")
    called = {
        "role": "assistant",
        "content": None,
        key: "Look it up.",
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
        ],
    }
    gen = openai_gen(messages=[*ASK, called, {"role": "tool", "tool_call_id": "c1",
                                              "content": "ok"}])  # fmt: skip
    assert gen.messages is not None
    assert gen.messages[1].reasoning == "Look it up." and gen.messages[1].content == ""


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"reasoning_effort": "extreme"}, "reasoning_effort"),
        ({"reasoning_effort": 3}, "reasoning_effort"),
        ({"chat_template_kwargs": "enable_thinking"}, "chat_template_kwargs"),
        ({"chat_template_kwargs": {"enable_thinking": 1}}, "chat_template_kwargs"),
        ({"chat_template_kwargs": {"messages": []}}, "chat_template_kwargs"),
        ({"chat_template_kwargs": {"not a name": 1}}, "chat_template_kwargs"),
        ({"chat_template_kwargs": {f"k{i}": i for i in range(33)}}, "chat_template_kwargs"),
        ({"chat_template_kwargs": {"enable_thinking": True}, "reasoning_effort": "none"},
         "chat_template_kwargs"),
        ({"messages": [{"role": "assistant", "content": "x", "reasoning_content": 5}]},
         "messages[0]"),
        ({"messages": [{"role": "user", "content": "x", "reasoning_content": "y"}]},
         "messages[0].reasoning_content"),
    ],
)  # fmt: skip
def test_openai_bad_reasoning_fields_are_refused(
    client: TestClient, extra: dict[str, Any], param: str
) -> None:
    assert_error(client.post(CHAT, json=chat_body("x", **extra)), 400, param=param)


def test_a_model_without_reasoning_answers_when_thinking_is_only_allowed(
    client: TestClient,
) -> None:
    for extra in (
        {"reasoning_effort": "high"},
        {"chat_template_kwargs": {"enable_thinking": False}},
    ):
        r = client.post(CHAT, json=chat_body("hello", **extra))
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"] == {"role": "assistant", "content": "hello"}


# --- Responses -----------------------------------------------------------------------


def responses_parse(**fields: Any) -> responses.ParsedResponse:
    return responses.parse({"model": "m", "input": "Why?", **fields}, DEFAULTS, model="m")


@pytest.mark.parametrize(
    ("reasoning", "thinking"),
    [
        (None, Thinking()),
        ({"effort": "low", "summary": "auto"}, Thinking(effort="low")),
        ({"effort": "none"}, Thinking(mode="off")),
        ({"effort": "max", "summary": "detailed", "context": "auto"}, Thinking(effort="high")),
        ({"summary": "concise"}, Thinking()),
    ],
)  # fmt: skip
def test_responses_reasoning_effort(reasoning: Any, thinking: Thinking) -> None:
    parsed = responses_parse(reasoning=reasoning)
    assert parsed.generation.thinking == thinking
    if reasoning is not None:
        summary = reasoning.get("summary")
        assert parsed.echo["reasoning"] == {"effort": reasoning.get("effort"), "summary": summary}


def test_reasoning_items_attach_to_the_assistant_turn_that_follows() -> None:
    think = {"type": "reasoning", "id": "rs_1", "summary": [],
             "content": [{"type": "reasoning_text", "text": "Look it up."}],
             "encrypted_content": None}  # fmt: skip
    summary = {"type": "reasoning", "summary": [{"type": "summary_text", "text": "Done."}]}
    items = [
        {"role": "user", "content": "Weather?"},
        think,
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
        summary,
        {"type": "message", "role": "assistant", "content": [
            {"type": "output_text", "text": "Sunny."}]},
        {"role": "user", "content": "Thanks."},
        think,  # followed by nothing: dropped
    ]  # fmt: skip
    got = [(m.role, m.content, m.reasoning, len(m.tool_calls)) for m in responses.items(items)]
    assert got == [
        ("user", "Weather?", None, 0),
        ("assistant", "", "Look it up.", 1),
        ("tool", "sunny", None, 0),
        ("assistant", "Sunny.", "Done.", 0),
        ("user", "Thanks.", None, 0),
    ]


@pytest.mark.parametrize(
    "extra",
    [
        {"reasoning": {"effort": "extreme"}},
        {"reasoning": {"effort": "low", "budget": 5}},
        {"reasoning": {"summary": "short"}},
        {"reasoning": "high"},
        {"input": [{"type": "reasoning", "content": [{"type": "text", "text": 5}]}]},
        {"input": [{"type": "reasoning", "summary": "x"}]},
    ],
)
def test_responses_bad_reasoning_is_refused(client: TestClient, extra: dict[str, Any]) -> None:
    body = {"model": "alpha", "input": "hi", **extra}
    error = assert_error(client.post(RESPONSES, json=body), 400)
    assert error["param"] in ("reasoning", "reasoning.effort", "input")


def test_responses_echo_the_reasoning_asked_for(client: TestClient) -> None:
    body = {"model": "alpha", "input": "hi", "reasoning": {"effort": "low", "summary": "auto"}}
    r = client.post(RESPONSES, json=body)
    assert r.status_code == 200, r.text
    assert r.json()["reasoning"] == {"effort": "low", "summary": "auto"}


# --- Anthropic -----------------------------------------------------------------------


def anthropic_parse(**fields: Any) -> anthropic.ParsedMessages:
    body = {"model": "m", "max_tokens": 4096, "messages": ASK, **fields}
    return anthropic.parse_messages(body, DEFAULTS, model="m")


@pytest.mark.parametrize(
    ("fields", "thinking", "shown"),
    [
        ({}, Thinking(), True),
        ({"thinking": {"type": "enabled", "budget_tokens": 2048}},
         Thinking("on", None, 2048), True),
        ({"thinking": {"type": "enabled", "budget_tokens": 1024, "display": "omitted"}},
         Thinking("on", None, 1024), False),
        ({"thinking": {"type": "disabled"}}, Thinking("off"), True),
        ({"thinking": {"type": "adaptive"}}, Thinking(), True),
        ({"thinking": {"type": "adaptive", "display": "summarized"},
          "output_config": {"effort": "max"}}, Thinking(effort="high"), True),
        ({"thinking": {"type": "between_tools"}}, Thinking("off"), True),
        ({"output_config": {"effort": "low"}}, Thinking(effort="low"), True),
    ],
)  # fmt: skip
def test_anthropic_thinking(fields: dict[str, Any], thinking: Thinking, shown: bool) -> None:
    parsed = anthropic_parse(**fields)
    assert parsed.generation.thinking == thinking and parsed.show_thinking is shown


def test_anthropic_thinking_blocks_are_an_earlier_turns_reasoning() -> None:
    turn = {"role": "assistant", "content": [
        {"type": "thinking", "thinking": "Check the sky.", "signature": "abc"},
        {"type": "redacted_thinking", "data": "EncryptedByAnthropic"},
        {"type": "text", "text": "Sunny."},
        {"type": "tool_use", "id": "t1", "name": "f", "input": {}},
    ]}  # fmt: skip
    messages = anthropic_parse(messages=[*ASK, turn]).generation.messages
    assert messages is not None
    said = messages[-1]
    assert (said.content, said.reasoning, len(said.tool_calls)) == ("Sunny.", "Check the sky.", 1)


@pytest.mark.parametrize(
    "extra",
    [
        {"thinking": {"type": "enabled"}},  # no budget
        {"thinking": {"type": "enabled", "budget_tokens": 0}},
        {"thinking": {"type": "sometimes"}},
        {"thinking": {"type": "adaptive", "display": "loud"}},
        {"thinking": {"type": "adaptive", "extra": 1}},
        {"thinking": True},
        {"output_config": {"effort": "minimal"}},
        {"messages": [{"role": "assistant", "content": [{"type": "thinking", "thinking": 5}]}]},
    ],
)
def test_anthropic_bad_thinking_is_refused(client: TestClient, extra: dict[str, Any]) -> None:
    body = {"model": "alpha", "max_tokens": 50, "messages": ASK, **extra}
    r = client.post("/v1/messages", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["type"] == "error" and r.json()["error"]["type"] == "invalid_request_error"


def test_adaptive_thinking_is_never_refused(client: TestClient) -> None:
    body = {"model": "alpha", "max_tokens": 50, "messages": ASK, "thinking": {"type": "adaptive"}}
    r = client.post("/v1/messages", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["content"] == [{"type": "text", "text": "Why?"}]


# --- Ollama --------------------------------------------------------------------------


def ollama_gen(**fields: Any) -> GenerationRequest:
    gen = ollama.parse_chat({"model": "m", "messages": ASK, **fields}, DEFAULTS, model="m")
    assert gen.generation is not None
    return gen.generation


@pytest.mark.parametrize(
    ("think", "thinking"),
    [
        (None, Thinking()),
        (True, Thinking("on")),
        (False, Thinking("off")),
        ("low", Thinking("on", "low")),
        ("high", Thinking("on", "high")),
    ],
)
def test_ollama_think(think: Any, thinking: Thinking) -> None:
    assert ollama_gen(think=think).thinking == thinking


def test_ollama_thinking_is_an_earlier_turns_reasoning() -> None:
    said = {"role": "assistant", "content": "Sunny.", "thinking": "Check the sky."}
    messages = ollama_gen(messages=[*ASK, said]).messages
    assert messages is not None and messages[-1].reasoning == "Check the sky."
    assert messages[-1].content == "Sunny."


@pytest.mark.parametrize("think", ["max", 1, {"on": True}])
def test_ollama_bad_think_is_refused(client: TestClient, think: Any) -> None:
    r = client.post("/api/chat", json={"model": "alpha", "messages": ASK, "think": think})
    assert r.status_code == 400 and set(r.json()) == {"error"} and "think" in r.json()["error"]


def test_ollama_think_false_answers(client: TestClient) -> None:
    body = {"model": "alpha", "messages": ASK, "think": False, "stream": False}
    r = client.post("/api/chat", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["message"] == {"role": "assistant", "content": "Why?"}


# --- thinking demanded of a model without a reasoning mode: each dialect's 400 ----------


def test_demanded_thinking_is_refused_in_each_dialects_shape(client: TestClient) -> None:
    kwargs = {"chat_template_kwargs": {"enable_thinking": True}}
    error = assert_error(client.post(CHAT, json=chat_body("x", **kwargs)), 400)
    assert "reasoning" in error["message"] or "thinking" in error["message"]
    enabled = {"type": "enabled", "budget_tokens": 1024}
    body = {"model": "alpha", "max_tokens": 50, "messages": ASK, "thinking": enabled}
    r = client.post("/v1/messages", json=body)
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = client.post("/api/chat", json={"model": "alpha", "messages": ASK, "think": "high"})
    assert r.status_code == 400 and set(r.json()) == {"error"}
