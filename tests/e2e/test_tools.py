"""Tool calls on the real model through the openai client: auto, streamed, forced, and
the next turn with the tool's answer."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

pytestmark = pytest.mark.e2e

TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the current weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "description": "The city name"}},
                "required": ["city"],
            },
        },
    }
]
ASK: list[Any] = [{"role": "user", "content": "What is the weather like in Paris right now?"}]


def test_auto_tool_call(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="default", messages=ASK, tools=TOOLS, temperature=0, max_tokens=80
    )
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls", choice.message
    (call,) = choice.message.tool_calls or []
    assert call.id.startswith("call_") and call.type == "function"
    assert call.function.name == "get_weather"
    assert "paris" in json.loads(call.function.arguments)["city"].lower()


def test_streamed_tool_call_assembles(client: openai.OpenAI) -> None:
    calls: dict[int, dict[str, str]] = {}
    finish = None
    for chunk in client.chat.completions.create(
        model="default", messages=ASK, tools=TOOLS, temperature=0, max_tokens=80, stream=True
    ):
        delta = chunk.choices[0].delta
        for part in delta.tool_calls or []:
            call = calls.setdefault(part.index, {"name": "", "arguments": ""})
            if part.function and part.function.name:
                call["name"] += part.function.name
            if part.function and part.function.arguments:
                call["arguments"] += part.function.arguments
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    assert calls[0]["name"] == "get_weather"
    assert "paris" in json.loads(calls[0]["arguments"])["city"].lower()


def test_required_forces_a_call(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="default",
        messages=[{"role": "user", "content": "Say hello to Oslo."}],
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        temperature=0,
        max_tokens=60,
    )
    (call,) = r.choices[0].message.tool_calls or []
    assert call.function.name == "get_weather"
    assert isinstance(json.loads(call.function.arguments)["city"], str)


def test_next_turn_uses_the_tool_answer(client: openai.OpenAI) -> None:
    messages: list[Any] = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_abc",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_abc", "content": '{"sky": "sunny", "celsius": 21}'},
    ]
    r = client.chat.completions.create(
        model="default", messages=messages, tools=TOOLS, temperature=0, max_tokens=60
    )
    choice = r.choices[0]
    assert choice.finish_reason == "stop" and not choice.message.tool_calls
    assert "21" in (choice.message.content or ""), choice.message.content


TIME: Any = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Get the current local time in one city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The city name"}},
            "required": ["city"],
        },
    },
}
# Asked for two cities, the default model writes both calls, as bare JSON objects.
TWO_CITIES: list[Any] = [
    {
        "role": "system",
        "content": "You must call a tool for every city the user names, one call per city, "
        "in a single reply. Never guess.",
    },
    {"role": "user", "content": "What is the weather in Paris and in Tokyo?"},
]


@pytest.mark.parametrize("parallel", [True, False])
def test_parallel_tool_calls(client: openai.OpenAI, parallel: bool) -> None:
    r = client.chat.completions.create(
        model="default", messages=TWO_CITIES, tools=[*TOOLS, TIME], temperature=0,
        max_tokens=150, parallel_tool_calls=parallel,
    )  # fmt: skip
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls", choice.message
    calls = choice.message.tool_calls or []
    cities = [json.loads(c.function.arguments)["city"] for c in calls]
    assert cities == (["Paris", "Tokyo"] if parallel else ["Paris"])
    assert all(c.function.name == "get_weather" for c in calls)
