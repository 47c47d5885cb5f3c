"""Ollama's NDJSON rendered from the output parser's events: ``thinking`` pieces beside
the text (on the message of a chat, beside ``response`` on a generate), tool calls whole,
and the ``ollama`` client reading the lines."""

from __future__ import annotations

import json
from typing import Any

import httpx
import ollama

from server.api.ollama.render import Reply, line
from server.engine.requests import Event, Finished, ReasoningDelta, TextDelta
from tests.unit.dialect_events import EVENTS, THOUGHT, answer


def stream(chat: bool = True, events: tuple[Event, ...] = EVENTS) -> bytes:
    reply, out = Reply("m", chat, 0.0, 0.0), b""
    for event in events:
        if isinstance(event, Finished):
            out += line(reply.last(event, None))
        else:
            out += reply.feed(event)
    return out


def lines(body: bytes) -> list[dict[str, Any]]:
    return [json.loads(ln) for ln in body.decode().splitlines()]


def test_chat_lines_carry_thinking_text_and_whole_calls() -> None:
    got = [ln["message"] for ln in lines(stream()) if not ln["done"]]
    assert got == [
        {"role": "assistant", "content": ""},
        {"role": "assistant", "content": "", "thinking": "The user wants weather."},
        {"role": "assistant", "content": "", "thinking": " Then time."},
        {"role": "assistant", "content": "Checking."},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "call_a", "function": {"index": 0, "name": "get_weather",
                                          "arguments": {"city": "Paris"}}}]},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "call_b", "function": {"index": 1, "name": "get_time",
                                          "arguments": {"zone": "CET"}}}]},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "call_c", "function": {"index": 2, "name": "noop", "arguments": {}}}]},
    ]  # fmt: skip
    assert lines(stream())[-1]["done"] is True


def test_generate_lines_carry_thinking_beside_the_response() -> None:
    plain = tuple(e for e in EVENTS if isinstance(e, ReasoningDelta | TextDelta | Finished))
    got = [{k: v for k, v in ln.items() if k in ("response", "thinking")}
           for ln in lines(stream(chat=False, events=plain))[:-1]]  # fmt: skip
    assert got == [
        {"response": ""},
        {"response": "", "thinking": "The user wants weather."},
        {"response": "", "thinking": " Then time."},
        {"response": "Checking."},
    ]


def test_a_whole_answer_has_thinking_apart_from_content() -> None:
    a = answer()
    message = Reply("m", True, 0.0, 0.0).last(a.finished, None, a.text, a.calls, a.reasoning)
    assert message["message"]["thinking"] == THOUGHT
    assert message["message"]["content"] == "Checking." and message["done"] is True
    assert len(message["message"]["tool_calls"]) == 3
    generated = Reply("m", False, 0.0, 0.0).last(a.finished, None, a.text, (), a.reasoning)
    assert generated["response"] == "Checking." and generated["thinking"] == THOUGHT
    bare = Reply("m", True, 0.0, 0.0).last(a.finished, None, "Hi")
    assert "thinking" not in bare["message"]


def test_the_ollama_client_reads_the_lines() -> None:
    def reply(request: httpx.Request) -> httpx.Response:
        headers = {"content-type": "application/x-ndjson"}
        return httpx.Response(200, content=stream(), headers=headers)

    client = ollama.Client("http://hearth.test", transport=httpx.MockTransport(reply))
    parts = list(client.chat("m", messages=[{"role": "user", "content": "?"}], stream=True))
    assert "".join(p.message.thinking or "" for p in parts) == THOUGHT
    assert "".join(p.message.content or "" for p in parts) == "Checking."
    calls = [c.function for p in parts for c in p.message.tool_calls or []]
    assert [(c.name, dict(c.arguments)) for c in calls] == [
        ("get_weather", {"city": "Paris"}), ("get_time", {"zone": "CET"}), ("noop", {}),
    ]  # fmt: skip
