"""The Responses API rendered from the output parser's events: a ``reasoning`` item
(``response.reasoning_text.delta``), a message item, ``function_call`` items whose
arguments stream as generated, and the ``openai`` client's own stream helper assembling
the result; a stored response's reasoning comes back as the turn's reasoning."""

from __future__ import annotations

from typing import Any

import httpx
import openai

from server.api.responses.render import Output, Response, as_messages, whole
from server.engine.requests import Event, Failed, Finished
from server.errors import RequestTimeout
from tests.api.test_responses import events
from tests.unit.dialect_events import EVENTS, THOUGHT, answer


def response() -> Response:
    echo = {"reasoning": {"effort": "high", "summary": None}}
    return Response("m", echo, [], True, id="resp_x")


def stream(sequence: tuple[Event, ...] = EVENTS) -> tuple[bytes, dict[str, Any]]:
    output = Output(response())
    out, body = output.start(), {}
    for event in sequence:
        if isinstance(event, Finished | Failed):
            last, body = output.end(event)
            out += last
        else:
            out += output.feed(event)
    return out, body


def test_streamed_items_have_the_exact_event_sequence() -> None:
    got = events(stream()[0].decode())
    brief = [(e["type"].removeprefix("response."), e.get("output_index"), e.get("delta"))
             for e in got]  # fmt: skip
    assert brief == [
        ("created", None, None),
        ("in_progress", None, None),
        ("output_item.added", 0, None),
        ("content_part.added", 0, None),
        ("reasoning_text.delta", 0, "The user wants weather."),
        ("reasoning_text.delta", 0, " Then time."),
        ("reasoning_text.done", 0, None),
        ("content_part.done", 0, None),
        ("output_item.done", 0, None),
        ("output_item.added", 1, None),
        ("content_part.added", 1, None),
        ("output_text.delta", 1, "Checking."),
        ("output_text.done", 1, None),
        ("content_part.done", 1, None),
        ("output_item.done", 1, None),
        ("output_item.added", 2, None),
        ("function_call_arguments.delta", 2, '{"city": '),
        ("function_call_arguments.delta", 2, '"Paris"'),
        ("function_call_arguments.delta", 2, "}"),  # what was left at the call's end
        ("function_call_arguments.done", 2, None),
        ("output_item.done", 2, None),
        ("output_item.added", 3, None),
        ("function_call_arguments.delta", 3, '{"zone": "CET"}'),
        ("function_call_arguments.done", 3, None),
        ("output_item.done", 3, None),
        ("output_item.added", 4, None),  # never streamed: its arguments in one delta
        ("function_call_arguments.delta", 4, "{}"),
        ("function_call_arguments.done", 4, None),
        ("output_item.done", 4, None),
        ("completed", None, None),
    ]
    added, part = got[2], got[3]
    assert added["item"] == {"id": added["item"]["id"], "type": "reasoning",
                             "status": "in_progress", "summary": [], "content": []}  # fmt: skip
    assert added["item"]["id"].startswith("rs_")
    assert part["part"] == {"type": "reasoning_text", "text": ""}
    assert got[4]["item_id"] == added["item"]["id"] and got[4]["content_index"] == 0
    assert got[6]["text"] == THOUGHT
    done = got[8]["item"]
    assert done["content"] == [{"type": "reasoning_text", "text": THOUGHT}]
    assert done["status"] == "completed"
    call = got[15]["item"]
    assert call["call_id"] == "call_a" and call["arguments"] == ""
    assert call["status"] == "in_progress" and call["name"] == "get_weather"
    assert got[19]["arguments"] == '{"city": "Paris"}'
    assert got[20]["item"]["arguments"] == '{"city": "Paris"}'


def test_the_completed_response_lists_every_item_and_echoes_reasoning() -> None:
    body = stream()[1]
    assert [o["type"] for o in body["output"]] == ["reasoning", "message"] + ["function_call"] * 3
    assert body["reasoning"] == {"effort": "high", "summary": None}
    whole_body = whole(response(), answer())
    assert [o["type"] for o in whole_body["output"]] == [o["type"] for o in body["output"]]
    assert whole_body["output"][0]["content"] == [{"type": "reasoning_text", "text": THOUGHT}]


def test_a_stored_response_replays_its_reasoning_as_reasoning() -> None:
    (turn,) = as_messages(stream()[1]["output"])
    assert turn.role == "assistant" and turn.content == "Checking."
    assert turn.reasoning == THOUGHT and len(turn.tool_calls) == 3


def test_a_failure_mid_reasoning_closes_the_item_first() -> None:
    failed = (*EVENTS[:3], Failed(RequestTimeout("too slow")))
    got = events(stream(failed)[0].decode())
    assert [e["type"] for e in got[-2:]] == ["response.output_item.done", "response.failed"]
    assert got[-1]["response"]["output"][0]["type"] == "reasoning"


def test_the_openai_client_assembles_the_stream() -> None:
    def reply(request: httpx.Request) -> httpx.Response:
        headers = {"content-type": "text/event-stream"}
        return httpx.Response(200, content=stream()[0], headers=headers)

    client = openai.OpenAI(
        base_url="http://hearth.test/v1", api_key="unused",
        http_client=httpx.Client(transport=httpx.MockTransport(reply)),
    )  # fmt: skip
    with client.responses.stream(model="m", input="weather?") as sse:
        final = sse.get_final_response()
    reasoning, message, *calls = final.output
    assert reasoning.type == "reasoning" and reasoning.content is not None
    assert reasoning.content[0].text == THOUGHT
    assert message.type == "message" and final.output_text == "Checking."
    got = [(c.call_id, c.name, c.arguments) for c in calls if c.type == "function_call"]
    assert got == [
        ("call_a", "get_weather", '{"city": "Paris"}'),
        ("call_b", "get_time", '{"zone": "CET"}'),
        ("call_c", "noop", "{}"),
    ]
