"""The Anthropic Messages API through the HTTP layer. The fake model echoes the last
message, so a test writes what the "model" says, tool-call tags and all."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from server.api.app import create_app
from server.engine.hub import ModelHub
from server.settings import Settings
from tests.api.conftest import BASE_URL
from tests.api.test_fim import fake
from tests.api.test_tools import CALL

MESSAGES = "/v1/messages"
TOOL = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}
KEY = "sk-hearth-test-0123456789abcdef"


def body(said: Any = "Hello there", **kw: Any) -> dict[str, Any]:
    return {"model": "alpha", "max_tokens": 100, "messages": [{"role": "user", "content": said}],
            **kw}  # fmt: skip


def events(text: str) -> list[tuple[str, dict[str, Any]]]:
    """An Anthropic event stream as (event name, data), checking the two agree."""
    out = []
    for chunk in text.strip().split("\n\n"):
        head, data = chunk.split("\n")
        name = head.removeprefix("event: ")
        payload = json.loads(data.removeprefix("data: "))
        assert payload["type"] == name
        out.append((name, payload))
    return out


def assert_error(resp: Any, status: int, kind: str) -> str:
    assert resp.status_code == status, resp.text
    payload = resp.json()
    assert payload["type"] == "error" and set(payload["error"]) == {"type", "message"}
    assert payload["error"]["type"] == kind, payload
    assert "Traceback" not in resp.text
    message: str = payload["error"]["message"]
    return message


def test_a_message_has_anthropics_shape(client: TestClient) -> None:
    r = client.post(MESSAGES, json=body(model="a"))
    assert r.status_code == 200, r.text
    msg = r.json()
    assert msg["id"].startswith("msg_") and msg["type"] == "message"
    assert msg["role"] == "assistant" and msg["model"] == "a"  # the name asked for
    assert msg["content"] == [{"type": "text", "text": "Hello there"}]
    assert msg["stop_reason"] == "end_turn" and msg["stop_sequence"] is None
    usage = msg["usage"]
    assert usage["output_tokens"] == len("Hello there")
    assert usage["input_tokens"] + usage["cache_read_input_tokens"] > 0
    assert usage["cache_creation_input_tokens"] == 0


def test_a_stream_follows_the_event_grammar(client: TestClient) -> None:
    r = client.post(MESSAGES, json=body("Hi ünï", stream=True))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    got = events(r.text)
    names = [n for n, _ in got]
    assert names[:2] == ["message_start", "content_block_start"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(names[2:-3]) == {"content_block_delta"}
    start = got[0][1]["message"]
    assert start["content"] == [] and start["stop_reason"] is None
    text = "".join(p["delta"]["text"] for n, p in got if n == "content_block_delta")
    assert text == "Hi ünï"
    delta = got[-2][1]
    assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert delta["usage"]["output_tokens"] > 0


def test_a_tool_call_is_a_tool_use_block(client: TestClient, hub: ModelHub) -> None:
    r = client.post(MESSAGES, json=body("Let me check. " + CALL, tools=[TOOL]))
    msg = r.json()
    assert msg["stop_reason"] == "tool_use"
    text, call = msg["content"]
    assert text == {"type": "text", "text": "Let me check."}
    assert call["type"] == "tool_use" and call["name"] == "get_weather"
    assert call["input"] == {"city": "Paris"} and call["id"]
    (tools,) = fake(hub).tools_seen
    assert [t.name for t in tools] == ["get_weather"]


def test_a_streamed_tool_call_sends_its_input_as_json_deltas(client: TestClient) -> None:
    got = events(client.post(MESSAGES, json=body(CALL, tools=[TOOL], stream=True)).text)
    starts = [p["content_block"] for n, p in got if n == "content_block_start"]
    assert starts[-1]["type"] == "tool_use" and starts[-1]["input"] == {}
    deltas = [p["delta"] for n, p in got if n == "content_block_delta"]
    partial = "".join(d["partial_json"] for d in deltas if d["type"] == "input_json_delta")
    assert json.loads(partial) == {"city": "Paris"}
    assert got[-2][1]["delta"]["stop_reason"] == "tool_use"


def test_tool_use_and_tool_result_turns_reach_the_template(client: TestClient) -> None:
    history = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "x"},
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
             "input": {"city": "Paris"}},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "is_error": True,
             "content": [{"type": "text", "text": "no network"}]},
        ]},
    ]  # fmt: skip
    r = client.post(MESSAGES, json={"model": "alpha", "max_tokens": 50, "messages": history,
                                    "tools": [TOOL]})  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.json()["content"][0]["text"] == "Error: no network"  # the tool message, echoed


def test_a_stop_sequence_is_named(client: TestClient) -> None:
    msg = client.post(MESSAGES, json=body("one two three", stop_sequences=["two"])).json()
    assert msg["content"][0]["text"] == "one "
    assert (msg["stop_reason"], msg["stop_sequence"]) == ("stop_sequence", "two")


def test_max_tokens_is_a_ceiling_not_a_request(client: TestClient) -> None:
    """Claude Code asks for 64,000 whatever the model: past the context it still answers."""
    assert client.post(MESSAGES, json=body(max_tokens=64000)).status_code == 200
    msg = client.post(MESSAGES, json=body("a long answer", max_tokens=3)).json()
    assert msg["stop_reason"] == "max_tokens" and msg["usage"]["output_tokens"] == 3


def test_hosted_service_fields_are_accepted_and_change_nothing(client: TestClient) -> None:
    plain = client.post(MESSAGES, json=body()).json()
    steered = body(
        metadata={"user_id": "u"}, thinking={"type": "adaptive"},
        output_config={"effort": "high"}, service_tier="auto",
        context_management={"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        system=[{"type": "text", "text": "x-anthropic-billing-header: cc_version=1;"},
                {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
    )  # fmt: skip
    r = client.post(MESSAGES, json=steered, headers={"anthropic-beta": "a,b"})
    assert r.status_code == 200, r.text
    assert r.json()["content"] == plain["content"]


def test_the_billing_header_is_not_part_of_the_prompt(client: TestClient) -> None:
    def count(system: list[dict[str, str]]) -> int:
        r = client.post(f"{MESSAGES}/count_tokens", json=body(system=system))
        assert r.status_code == 200, r.text
        n: int = r.json()["input_tokens"]
        return n

    brief = {"type": "text", "text": "Be brief."}
    billed = [{"type": "text", "text": "x-anthropic-billing-header: cc_version=9.9; e=x;"}, brief]
    assert count(billed) == count([brief]) > 0


def test_a_system_message_inside_the_conversation_is_kept(client: TestClient) -> None:
    history = [{"role": "user", "content": "hi"}, {"role": "system", "content": "Now be formal."}]
    r = client.post(MESSAGES, json={"model": "alpha", "max_tokens": 50, "messages": history})
    assert r.json()["content"][0]["text"] == "Now be formal."


@pytest.mark.parametrize(
    ("change", "status", "kind"),
    [
        ({"model": "claude-unknown"}, 404, "not_found_error"),
        ({"max_tokens": None}, 400, "invalid_request_error"),
        ({"max_tokens": 0}, 400, "invalid_request_error"),
        ({"temperature": 1.5}, 400, "invalid_request_error"),
        ({"bogus": 1}, 400, "invalid_request_error"),
        ({"messages": []}, 400, "invalid_request_error"),
        ({"messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": ""}}
        ]}]}, 400, "invalid_request_error"),
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, 400,
         "invalid_request_error"),
        ({"tool_choice": {"type": "tool", "name": "nope"}, "tools": [TOOL]}, 400,
         "invalid_request_error"),
    ],
)  # fmt: skip
def test_errors_have_anthropics_shape(
    client: TestClient, change: dict[str, Any], status: int, kind: str
) -> None:
    sent = {k: v for k, v in {**body(), **change}.items() if v is not None}
    assert_error(client.post(MESSAGES, json=sent), status, kind)


def test_malformed_json_and_unknown_paths_are_anthropic_errors(client: TestClient) -> None:
    assert_error(client.post(MESSAGES, content=b"{"), 400, "invalid_request_error")
    assert_error(client.post(f"{MESSAGES}/batches", json={}), 404, "not_found_error")
    assert_error(client.get(MESSAGES), 405, "invalid_request_error")


def test_a_forced_tool_call_gets_a_grammar(client: TestClient, hub: ModelHub) -> None:
    choice = {"type": "tool", "name": "get_weather"}
    r = client.post(MESSAGES, json=body(CALL, tools=[TOOL], tool_choice=choice))
    assert r.status_code == 200, r.text
    assert "get_weather" in fake(hub).grammars[-1]


@pytest.fixture
def keyed(hub: ModelHub) -> Iterator[TestClient]:
    app = create_app(hub, Settings(api_keys=(KEY,)))
    with TestClient(app, base_url=BASE_URL, raise_server_exceptions=False) as c:
        yield c


def test_x_api_key_authenticates_as_bearer_does(keyed: TestClient) -> None:
    assert keyed.post(MESSAGES, json=body(), headers={"x-api-key": KEY}).status_code == 200
    bearer = {"Authorization": f"Bearer {KEY}"}
    assert keyed.post(MESSAGES, json=body(), headers=bearer).status_code == 200
    wrong = keyed.post(MESSAGES, json=body(), headers={"x-api-key": "nope"})
    assert_error(wrong, 401, "authentication_error")
    # The OpenAI routes take the header too (one key check), and keep their own shape.
    chat = {"model": "alpha", "messages": [{"role": "user", "content": "x"}]}
    r = keyed.post("/v1/chat/completions", headers={"x-api-key": "nope"}, json=chat)
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
