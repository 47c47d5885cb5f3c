"""Anthropic Messages rendered from the output parser's events: ``thinking`` blocks
(``thinking_delta`` pieces, a ``signature_delta`` before the block stops), ``tool_use``
blocks whose ``input_json_delta`` pieces stream as generated, and the ``anthropic``
client's own stream helper assembling the result."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx2  # the anthropic SDK's own fork of httpx

from server.api.anthropic.render import Blocks, Message, signature
from server.engine.requests import Event, Finished
from tests.api.test_anthropic import events
from tests.unit.dialect_events import EVENTS, THOUGHT, answer

MESSAGE = Message("msg_x", "claude-x", ())


def stream(sequence: tuple[Event, ...] = EVENTS, shown: bool = True) -> bytes:
    blocks, out = Blocks(shown), MESSAGE.start(30)
    for event in sequence:
        if isinstance(event, Finished):
            out += blocks.close() + MESSAGE.end(event)
        else:
            out += blocks.feed(event)
    return out


def payloads(body: bytes) -> list[dict[str, Any]]:
    return [payload for _, payload in events(body.decode())]


def test_streamed_thinking_text_and_tool_use_have_the_exact_shapes() -> None:
    got = [{k: v for k, v in e.items() if k != "type"} | {"": e["type"]}
           for e in payloads(stream())[1:-2]]  # fmt: skip
    sign = signature(THOUGHT)

    def start(i: int, block: dict[str, Any]) -> dict[str, Any]:
        return {"": "content_block_start", "index": i, "content_block": block}

    def delta(i: int, **d: Any) -> dict[str, Any]:
        return {"": "content_block_delta", "index": i, "delta": d}

    def stop(i: int) -> dict[str, Any]:
        return {"": "content_block_stop", "index": i}

    def json_delta(i: int, piece: str) -> dict[str, Any]:
        return delta(i, type="input_json_delta", partial_json=piece)

    assert got == [
        start(0, {"type": "thinking", "thinking": "", "signature": ""}),
        delta(0, type="thinking_delta", thinking="The user wants weather."),
        delta(0, type="thinking_delta", thinking=" Then time."),
        delta(0, type="signature_delta", signature=sign),
        stop(0),
        start(1, {"type": "text", "text": ""}),
        delta(1, type="text_delta", text="Checking."),
        stop(1),
        start(2, {"type": "tool_use", "id": "call_a", "name": "get_weather", "input": {}}),
        json_delta(2, '{"city": '),
        json_delta(2, '"Paris"'),
        json_delta(2, "}"),  # what was left at the call's end
        stop(2),
        start(3, {"type": "tool_use", "id": "call_b", "name": "get_time", "input": {}}),
        json_delta(3, '{"zone": "CET"}'),
        stop(3),
        start(4, {"type": "tool_use", "id": "call_c", "name": "noop", "input": {}}),
        json_delta(4, "{}"),  # never streamed: whole
        stop(4),
    ]
    end = payloads(stream())[-2]
    assert end["delta"]["stop_reason"] == "tool_use" and end["usage"]["output_tokens"] == 20


def test_omitted_thinking_keeps_the_block_and_its_signature() -> None:
    got = payloads(stream(shown=False))
    thinking = [e for e in got if e.get("index") == 0]
    assert [e["type"] for e in thinking] == [
        "content_block_start", "content_block_delta", "content_block_stop"
    ]  # fmt: skip
    assert thinking[1]["delta"] == {"type": "signature_delta", "signature": signature(THOUGHT)}
    block = MESSAGE.full(answer(), show_thinking=False)["content"][0]
    assert block == {"type": "thinking", "thinking": "", "signature": signature(THOUGHT)}


def test_a_whole_message_has_thinking_before_text_and_calls() -> None:
    body = MESSAGE.full(answer())
    assert body["content"] == [
        {"type": "thinking", "thinking": THOUGHT, "signature": signature(THOUGHT)},
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "call_a", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "call_b", "name": "get_time", "input": {"zone": "CET"}},
        {"type": "tool_use", "id": "call_c", "name": "noop", "input": {}},
    ]
    assert body["stop_reason"] == "tool_use"


def test_the_anthropic_client_assembles_the_stream() -> None:
    def reply(request: httpx2.Request) -> httpx2.Response:
        headers = {"content-type": "text/event-stream"}
        return httpx2.Response(200, content=stream(), headers=headers)

    client = anthropic.Anthropic(
        base_url="http://hearth.test", api_key="unused",
        http_client=httpx2.Client(transport=httpx2.MockTransport(reply)),
    )  # fmt: skip
    ask: Any = [{"role": "user", "content": "weather?"}]
    with client.messages.stream(model="claude-x", max_tokens=100, messages=ask) as sse:
        final = sse.get_final_message()
    kinds = [b.type for b in final.content]
    assert kinds == ["thinking", "text", "tool_use", "tool_use", "tool_use"]
    thinking, text, *calls = final.content
    assert thinking.type == "thinking" and thinking.thinking == THOUGHT
    assert thinking.signature == signature(THOUGHT) and text.type == "text"
    inputs = [c.input for c in calls if c.type == "tool_use"]
    assert inputs == [{"city": "Paris"}, {"zone": "CET"}, {}]
    assert final.stop_reason == "tool_use"
