"""Chat completions rendered from the output parser's events: reasoning as both
``reasoning_content`` and ``reasoning``, tool calls streamed as generated, and the
``openai`` client's own stream helper assembling the result."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai

from server.api.openai.render import DONE, Chunks, Shape
from server.engine.requests import Event, Finished, FinishReason, TextDelta
from tests.unit.dialect_events import EVENTS, THOUGHT, USAGE, answer

SHAPE = Shape("chatcmpl-x", "m", chat=True, created=1)


def stream(events: tuple[Event, ...] = EVENTS, include_usage: bool = False) -> bytes:
    chunks = Chunks(SHAPE, include_usage)
    return chunks.start() + b"".join(chunks.feed(e) for e in events) + DONE


def deltas(body: bytes) -> list[dict[str, Any]]:
    lines = [ln for ln in body.decode().split("\n\n") if ln]
    assert lines[-1] == "data: [DONE]" and all(ln.startswith("data: ") for ln in lines)
    return [json.loads(ln[6:])["choices"][0]["delta"] for ln in lines[:-1]]


def test_streamed_reasoning_text_and_calls_have_the_exact_shapes() -> None:
    got = deltas(stream())
    head = {"type": "function", "function": {"name": "get_weather", "arguments": ""}}
    assert got == [
        {"role": "assistant", "content": ""},
        {"content": ""},
        {"reasoning_content": "The user wants weather.", "reasoning": "The user wants weather."},
        {"reasoning_content": " Then time.", "reasoning": " Then time."},
        {"content": "Checking."},
        {"tool_calls": [{"index": 0, "id": "call_a", **head}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"'}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": "}"}}]},  # what was left
        {"tool_calls": [{"index": 1, "id": "call_b", "type": "function",
                         "function": {"name": "get_time", "arguments": ""}}]},
        {"tool_calls": [{"index": 1, "function": {"arguments": '{"zone": "CET"}'}}]},
        # nothing was left of call 1; call 2 was never streamed: its head, then all of it
        {"tool_calls": [{"index": 2, "id": "call_c", "type": "function",
                         "function": {"name": "noop", "arguments": ""}}]},
        {"tool_calls": [{"index": 2, "function": {"arguments": "{}"}}]},
        {},
    ]  # fmt: skip


def test_the_last_chunk_has_the_finish_reason_and_usage() -> None:
    lines = [json.loads(ln[6:]) for ln in stream(include_usage=True).decode().split("\n\n")
             if ln.startswith("data: {")]  # fmt: skip
    assert lines[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert lines[-1]["choices"] == [] and lines[-1]["usage"]["completion_tokens"] == 20


def test_a_whole_message_carries_reasoning_apart_from_content() -> None:
    a = answer()
    body = SHAPE.full(a.text, "tool_calls", a.finished.usage, a.calls, a.reasoning)
    message = body["choices"][0]["message"]
    assert message["content"] == "Checking."
    assert message["reasoning_content"] == message["reasoning"] == THOUGHT
    assert [c["id"] for c in message["tool_calls"]] == ["call_a", "call_b", "call_c"]
    assert message["tool_calls"][0]["function"] == {
        "name": "get_weather", "arguments": '{"city": "Paris"}'
    }  # fmt: skip


def test_an_answer_without_reasoning_has_no_reasoning_fields() -> None:
    plain = (TextDelta("Hi"), Finished(FinishReason.STOP, USAGE))
    message = SHAPE.full("Hi", "stop", USAGE, (), answer(plain).reasoning)["choices"][0]
    assert message["message"] == {"role": "assistant", "content": "Hi"}
    assert all("reasoning" not in d for d in deltas(stream(plain)))


def client(body: bytes) -> openai.OpenAI:
    def reply(request: httpx.Request) -> httpx.Response:
        headers = {"content-type": "text/event-stream"}
        return httpx.Response(200, content=body, headers=headers)

    transport = httpx.MockTransport(reply)
    return openai.OpenAI(base_url="http://hearth.test/v1", api_key="unused",
                         http_client=httpx.Client(transport=transport))  # fmt: skip


def test_the_openai_client_assembles_the_stream() -> None:
    ask: Any = [{"role": "user", "content": "weather?"}]
    with client(stream()).chat.completions.stream(model="m", messages=ask) as events:
        final = events.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content == "Checking."
    calls = choice.message.tool_calls or []
    got = [(c.id, c.function.name, c.function.arguments) for c in calls]  # type: ignore[union-attr]
    assert got == [
        ("call_a", "get_weather", '{"city": "Paris"}'),
        ("call_b", "get_time", '{"zone": "CET"}'),
        ("call_c", "noop", "{}"),
    ]
    extra = choice.message.model_extra or {}
    assert extra.get("reasoning_content") == extra.get("reasoning") == THOUGHT
