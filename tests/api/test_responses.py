"""The Responses API through the HTTP layer. The fake model echoes the last message, so
a test writes what the "model" says, tool-call tags and all."""

from __future__ import annotations

import json
from typing import Any

import pytest
from starlette.testclient import TestClient

from server.engine.hub import ModelHub
from tests.api.test_api import assert_error
from tests.api.test_fim import fake
from tests.api.test_tools import CALL

RESPONSES = "/v1/responses"
FUNCTION = {
    "type": "function", "name": "get_weather", "description": "The weather in a city",
    "strict": False,
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}  # fmt: skip


def body(said: Any = "Hello there", **kw: Any) -> dict[str, Any]:
    return {"model": "alpha", "input": said, **kw}


def events(text: str) -> list[dict[str, Any]]:
    out = []
    for chunk in text.strip().split("\n\n"):
        if chunk.startswith(":"):
            continue
        head, data = chunk.split("\n")
        payload = json.loads(data.removeprefix("data: "))
        assert head == f"event: {payload['type']}"
        out.append(payload)
    assert [e["sequence_number"] for e in out] == list(range(len(out)))
    return out


def test_a_response_has_openais_shape(client: TestClient) -> None:
    r = client.post(RESPONSES, json=body(instructions="Be brief."))
    assert r.status_code == 200, r.text
    resp = r.json()
    assert resp["id"].startswith("resp_") and resp["object"] == "response"
    assert resp["status"] == "completed" and resp["error"] is None
    (item,) = resp["output"]
    assert item["type"] == "message" and item["role"] == "assistant"
    assert item["content"][0]["type"] == "output_text"
    assert item["content"][0]["text"] == "Hello there"
    usage = resp["usage"]
    assert usage["output_tokens"] == len("Hello there")
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert "cached_tokens" in usage["input_tokens_details"]
    assert resp["instructions"] == "Be brief."


def test_a_stream_has_every_event_numbered(client: TestClient) -> None:
    got = events(client.post(RESPONSES, json=body("Hi ünï", stream=True)).text)
    kinds = [e["type"] for e in got]
    assert kinds[:4] == ["response.created", "response.in_progress",
                         "response.output_item.added", "response.content_part.added"]  # fmt: skip
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done",
                          "response.output_item.done", "response.completed"]  # fmt: skip
    text = "".join(e["delta"] for e in got if e["type"] == "response.output_text.delta")
    assert text == "Hi ünï" == got[-4]["text"]
    final = got[-1]["response"]
    assert final["status"] == "completed" and final["output"][0]["content"][0]["text"] == text


def test_a_function_call_is_an_output_item(client: TestClient) -> None:
    resp = client.post(RESPONSES, json=body("Checking. " + CALL, tools=[FUNCTION])).json()
    text, call = resp["output"]
    assert text["content"][0]["text"] == "Checking."
    assert call["type"] == "function_call" and call["name"] == "get_weather"
    assert call["call_id"] and call["id"].startswith("fc_")
    assert json.loads(call["arguments"]) == {"city": "Paris"}
    got = events(client.post(RESPONSES, json=body(CALL, tools=[FUNCTION], stream=True)).text)
    done = [e for e in got if e["type"] == "response.function_call_arguments.done"]
    assert json.loads(done[0]["arguments"]) == {"city": "Paris"}


def test_hosted_tools_are_not_offered_and_the_response_says_so(
    client: TestClient, hub: ModelHub
) -> None:
    tools = [FUNCTION, {"type": "web_search", "external_web_access": False}]
    r = client.post(RESPONSES, json=body(tools=tools))
    assert r.status_code == 200, r.text
    assert r.headers["hearth-tools-not-offered"] == "web_search"
    assert [t["name"] for t in r.json()["tools"]] == ["get_weather"]
    assert [t.name for t in fake(hub).tools_seen[-1]] == ["get_weather"]


def test_a_namespace_is_flattened_and_its_calls_name_it(client: TestClient, hub: ModelHub) -> None:
    space = {"type": "namespace", "name": "agents", "description": "Sub-agents",
             "tools": [{**FUNCTION, "name": "spawn"}]}  # fmt: skip
    said = CALL.replace("get_weather", "agents.spawn")
    resp = client.post(RESPONSES, json=body(said, tools=[space])).json()
    assert [t.name for t in fake(hub).tools_seen[-1]] == ["agents.spawn"]
    (call,) = resp["output"]
    assert (call["namespace"], call["name"]) == ("agents", "spawn")


def test_function_call_items_and_outputs_reach_the_template(client: TestClient) -> None:
    history = [
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "x"}]},
        {"type": "message", "role": "user", "content": "Weather in Paris?"},
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {"type": "function_call", "call_id": "c1", "name": "get_weather",
         "arguments": '{"city": "Paris"}'},
        {"type": "function_call_output", "call_id": "c1", "output": "sunny, 17 C"},
    ]  # fmt: skip
    resp = client.post(RESPONSES, json=body(history, tools=[FUNCTION])).json()
    assert resp["output"][0]["content"][0]["text"] == "sunny, 17 C"  # the tool output, echoed


def test_previous_response_id_continues_the_conversation(client: TestClient) -> None:
    first = client.post(RESPONSES, json=body("one")).json()
    second = client.post(RESPONSES, json=body("two", previous_response_id=first["id"])).json()
    assert second["previous_response_id"] == first["id"]
    assert second["output"][0]["content"][0]["text"] == "two"
    # The stored conversation is longer than the new input: it carries the first turn.
    assert second["usage"]["input_tokens"] > first["usage"]["input_tokens"]
    assert client.get(f"{RESPONSES}/{second['id']}").json()["id"] == second["id"]
    deleted = client.delete(f"{RESPONSES}/{first['id']}").json()
    assert deleted == {"id": first["id"], "object": "response", "deleted": True}
    gone = client.post(RESPONSES, json=body("three", previous_response_id=first["id"]))
    assert_error(gone, 404, code="response_not_found", param="previous_response_id")


def test_store_false_keeps_nothing(client: TestClient) -> None:
    resp = client.post(RESPONSES, json=body(store=False)).json()
    assert_error(client.get(f"{RESPONSES}/{resp['id']}"), 404, code="response_not_found")


def test_max_output_tokens_ends_incomplete(client: TestClient) -> None:
    resp = client.post(RESPONSES, json=body("a long answer", max_output_tokens=3)).json()
    assert resp["status"] == "incomplete"
    assert resp["incomplete_details"] == {"reason": "max_output_tokens"}
    assert client.post(RESPONSES, json=body(max_output_tokens=64000)).status_code == 200


def test_text_format_json_schema_gets_a_grammar(client: TestClient, hub: ModelHub) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    fmt = {"format": {"type": "json_schema", "name": "n", "schema": schema, "strict": True}}
    r = client.post(RESPONSES, json=body('{"n": 1}', text=fmt))
    assert r.status_code == 200, r.text
    assert '"n"' in fake(hub).grammars[-1] or "n" in fake(hub).grammars[-1]


def test_hosted_only_fields_are_accepted(client: TestClient) -> None:
    steered = body(
        store=False, reasoning={"summary": "auto"}, include=["reasoning.encrypted_content"],
        prompt_cache_key="k", client_metadata={"a": "b"}, parallel_tool_calls=True,
        tool_choice="auto", tools=[FUNCTION], safety_identifier="s",
    )  # fmt: skip
    assert client.post(RESPONSES, json=steered).status_code == 200


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"bogus": 1}, "bogus"),
        ({"background": True}, "background"),
        ({"truncation": "auto"}, "truncation"),
        ({"include": ["message.output_text.logprobs"]}, "include"),
        ({"input": [{"type": "message", "role": "user",
                     "content": [{"type": "input_image", "image_url": "x"}]}]}, "input"),
        ({"tools": [{"type": "custom", "name": "apply_patch"}]}, "tools"),
        ({"tool_choice": {"type": "function", "name": "nope"}, "tools": [FUNCTION]},
         "tool_choice"),
        ({"temperature": 3}, "temperature"),
        ({"previous_response_id": "resp_never"}, "previous_response_id"),
    ],
)  # fmt: skip
def test_what_cannot_be_honoured_is_refused(
    client: TestClient, change: dict[str, Any], param: str
) -> None:
    r = client.post(RESPONSES, json=body(**change))
    assert r.status_code in (400, 404), r.text
    assert_error(r, r.status_code, param=param)
