"""Tool calls through the HTTP layer. The fake model echoes the last message, so the
test writes what the "model" says, tags and all, and it streams byte by byte."""

from __future__ import annotations

import json
from typing import Any

from starlette.testclient import TestClient

from backends.base import SamplingParams
from server.api.anthropic import schemas as anthropic
from server.api.openai import schemas as chat
from server.api.responses import schemas as responses
from server.engine.hub import ModelHub
from tests.api.test_api import assert_error, sse_events
from tests.api.test_fim import fake

CHAT = "/v1/chat/completions"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
TWO_CALLS = f"{CALL}\n{CALL.replace('Paris', 'Oslo')}\nDone."


def body(said: str, **kw: Any) -> dict[str, Any]:
    return {"model": "alpha", "messages": [{"role": "user", "content": said}], "tools": TOOLS, **kw}


def metric(client: TestClient) -> str:
    lines = client.get("/metrics").text.splitlines()
    return "\n".join(ln for ln in lines if ln.startswith("hearth_tool_call_parse_failures_total"))


def test_a_tool_call_becomes_message_tool_calls(client: TestClient, hub: ModelHub) -> None:
    r = client.post(CHAT, json=body("Checking. " + CALL))
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    message = choice["message"]
    assert message["content"] == "Checking."
    (call,) = message["tool_calls"]
    assert call["id"].startswith("call_") and call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}
    (tools,) = fake(hub).tools_seen
    assert [t.name for t in tools] == ["get_weather"]


def test_only_calls_means_null_content(client: TestClient) -> None:
    message = client.post(CHAT, json=body(CALL)).json()["choices"][0]["message"]
    assert message["content"] is None and len(message["tool_calls"]) == 1


def test_streamed_tool_call_chunks(client: TestClient) -> None:
    """Each call's first chunk has its id, type and name; its arguments follow in pieces
    as the model writes them."""
    events = sse_events(client.post(CHAT, json=body(CALL + CALL, stream=True)).text)
    deltas = [e["choices"][0]["delta"] for e in events if e["choices"]]
    parts = [t for d in deltas for t in d.get("tool_calls", [])]
    for index in (0, 1):
        mine = [p for p in parts if p["index"] == index]
        first, rest = mine[0], mine[1:]
        assert first["id"].startswith("call_") and first["type"] == "function"
        assert first["function"] == {"name": "get_weather", "arguments": ""}
        assert rest and all(set(p) == {"index", "function"} for p in rest)
        arguments = "".join(p["function"]["arguments"] for p in rest)
        assert json.loads(arguments) == {"city": "Paris"}
    assert [p["index"] for p in parts] == sorted(p["index"] for p in parts)
    assert events[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert "".join(d.get("content") or "" for d in deltas) == ""


def test_parallel_tool_calls_false_stops_generation_after_the_first_call(
    client: TestClient,
) -> None:
    choice, usage = answer(client, body(TWO_CALLS))
    assert [
        json.loads(c["function"]["arguments"])["city"] for c in choice["message"]["tool_calls"]
    ] == ["Paris", "Oslo"]
    assert usage["completion_tokens"] == len(TWO_CALLS)  # the fake writes a token a byte
    choice, usage = answer(client, body(TWO_CALLS, parallel_tool_calls=False))
    (call,) = choice["message"]["tool_calls"]
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    assert usage["completion_tokens"] == len(CALL)  # it stopped at the first call's end


def test_parallel_tool_calls_false_streamed(client: TestClient) -> None:
    request = body(TWO_CALLS, parallel_tool_calls=False, stream=True)
    events = sse_events(client.post(CHAT, json=request).text)
    deltas = [e["choices"][0]["delta"] for e in events if e["choices"]]
    parts = [t for d in deltas for t in d.get("tool_calls", [])]
    assert {p["index"] for p in parts} == {0}
    arguments = "".join(p["function"]["arguments"] for p in parts)
    assert json.loads(arguments) == {"city": "Paris"}
    assert events[-1]["choices"][0]["finish_reason"] == "tool_calls"


def answer(client: TestClient, request: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    r = client.post(CHAT, json=request)
    assert r.status_code == 200, r.text
    data = r.json()
    return data["choices"][0], data["usage"]


def test_no_call_is_plain_content(client: TestClient) -> None:
    choice = client.post(CHAT, json=body("just text")).json()["choices"][0]
    assert choice["finish_reason"] == "stop" and choice["message"] == {
        "role": "assistant",
        "content": "just text",
    }


def test_tool_choice_none_leaves_tools_out(client: TestClient, hub: ModelHub) -> None:
    choice = client.post(CHAT, json=body(CALL, tool_choice="none")).json()["choices"][0]
    assert choice["message"]["content"] == CALL and choice["finish_reason"] == "stop"
    assert fake(hub).tools_seen == [()]


def test_required_and_named_choice_force_a_call_with_a_grammar(
    client: TestClient, hub: ModelHub
) -> None:
    named = {"type": "function", "function": {"name": "get_weather"}}
    for choice in ("required", named):
        assert client.post(CHAT, json=body(CALL, tool_choice=choice)).status_code == 200
    grammars = fake(hub).grammars
    assert len(grammars) == 2
    assert all(g.startswith('root ::= "<tool_call>\\n" hearth-json') for g in grammars)


def test_bad_arguments_are_returned_and_counted(client: TestClient) -> None:
    bad = '<tool_call>\n{"name": "get_weather", "arguments": {"town": 1}}\n</tool_call>'
    assert metric(client) == ""
    call = client.post(CHAT, json=body(bad)).json()["choices"][0]["message"]["tool_calls"][0]
    assert json.loads(call["function"]["arguments"]) == {"town": 1}
    assert metric(client) == 'hearth_tool_call_parse_failures_total{model="alpha"} 1'


def test_next_turn_with_tool_calls_and_a_tool_message(client: TestClient) -> None:
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"},
    ]
    r = client.post(CHAT, json={"model": "alpha", "messages": messages, "tools": TOOLS})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "sunny, 21 C"


def test_bad_tools_requests(client: TestClient) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        (body("x", tools={}), "tools"),
        (body("x", tools=[{"type": "function", "function": {"name": "bad name"}}]), "tools"),
        (body("x", tools=TOOLS * 2), "tools"),
        (body("x", tool_choice="sometimes"), "tool_choice"),
        (body("x", tool_choice={"type": "function", "function": {"name": "nope"}}), "tool_choice"),
        ({**body("x"), "tools": None, "tool_choice": "required"}, "tool_choice"),
        (body("x", parallel_tool_calls="yes"), "parallel_tool_calls"),
        (
            {"model": "alpha", "messages": [{"role": "tool", "content": "x"}]},
            "messages[0]",
        ),
        (
            {
                "model": "alpha",
                "messages": [{"role": "assistant", "tool_calls": [{"function": {"name": 1}}]}],
            },
            "messages[0].tool_calls",
        ),
        (
            {"model": "alpha", "messages": [{"role": "user", "content": "x", "tool_calls": []}]},
            "messages[0].tool_calls",
        ),
    ]
    for request, param in cases:
        assert_error(client.post(CHAT, json=request), 400, param=param)


def test_each_dialect_ends_a_single_call_in_the_models_format() -> None:
    """With one call allowed, the request stops where a call ends in the model's own
    tool format (the route passes the loaded model's), not Hermes' ``</tool_call>``."""
    end, defaults, ask = "<|call|>", SamplingParams(), [{"role": "user", "content": "x"}]
    gen = chat.parse_chat(
        body("x", parallel_tool_calls=False), defaults, model="m", tool_format="harmony"
    ).generation
    assert gen.stop == (end,)
    tool = {"name": "get_weather", "input_schema": {"type": "object"}}
    one = {"type": "auto", "disable_parallel_tool_use": True}
    message = {"model": "m", "max_tokens": 9, "messages": ask, "tools": [tool], "tool_choice": one}
    parsed = anthropic.parse_messages(message, defaults, model="m", tool_format="harmony")
    assert parsed.generation.stop == (end,) and parsed.stop_sequences == ()
    function = {"type": "function", "name": "get_weather", "parameters": {"type": "object"}}
    request = {"model": "m", "input": "x", "tools": [function], "parallel_tool_calls": False}
    gen = responses.parse(request, defaults, model="m", tool_format="harmony").generation
    assert gen.stop == (end,)
