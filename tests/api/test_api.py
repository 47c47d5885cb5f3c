"""The HTTP layer in-process over the fake backend: shapes, SSE, errors."""

from __future__ import annotations

import json
from typing import Any

import pytest
from starlette.testclient import TestClient

from server.engine.hub import ModelHub

CHAT = "/v1/chat/completions"


def chat_body(text: str, **kw: Any) -> dict[str, Any]:
    return {"model": "alpha", "messages": [{"role": "user", "content": text}], **kw}


def sse_events(body: str) -> list[Any]:
    lines = [ln for ln in body.split("\n") if ln]
    assert all(ln.startswith("data: ") for ln in lines), lines
    assert lines[-1] == "data: [DONE]"
    return [json.loads(ln[6:]) for ln in lines[:-1]]


def assert_error(
    resp: Any, status: int, *, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"] and "Traceback" not in resp.text
    if code is not None:
        assert error["code"] == code
    if param is not None:
        assert error["param"] == param
    return error


def test_chat_completion_shape(client: TestClient) -> None:
    body = client.post(CHAT, json=chat_body("hello there")).json()
    assert body["id"].startswith("chatcmpl-") and body["object"] == "chat.completion"
    assert body["model"] == "alpha" and isinstance(body["created"], int)
    (choice,) = body["choices"]
    assert choice["message"] == {"role": "assistant", "content": "hello there"}
    assert choice["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["completion_tokens"] == len(b"hello there")
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_alias_routes_to_the_model(client: TestClient) -> None:
    body = client.post(CHAT, json={**chat_body("x"), "model": "a"}).json()
    assert body["model"] == "alpha"
    body = client.post(CHAT, json={**chat_body("x"), "model": "beta"}).json()
    assert body["model"] == "beta"


def test_content_parts_are_joined(client: TestClient) -> None:
    parts = [{"type": "text", "text": "ab"}, {"type": "text", "text": "cd"}]
    body = client.post(
        CHAT, json={"model": "alpha", "messages": [{"role": "user", "content": parts}]}
    )
    assert body.json()["choices"][0]["message"]["content"] == "abcd"


def test_streamed_chat_chunks(client: TestClient) -> None:
    resp = client.post(
        CHAT, json=chat_body("héllo 🎉", stream=True, stream_options={"include_usage": True})
    )
    assert resp.headers["content-type"].startswith("text/event-stream")
    events = sse_events(resp.text)
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(e["object"] == "chat.completion.chunk" for e in events)
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events if e["choices"])
    assert text == "héllo 🎉"
    assert events[-2]["choices"][0]["finish_reason"] == "stop"
    assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] == 11


def test_streamed_stop_string_never_leaks(client: TestClient) -> None:
    resp = client.post(CHAT, json=chat_body("keep END drop", stream=True, stop=["END"]))
    events = sse_events(resp.text)
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events)
    assert text == "keep "


def test_completions_streamed_and_not(client: TestClient) -> None:
    body = client.post(
        "/v1/completions", json={"model": "alpha", "prompt": "abc", "max_tokens": 2}
    ).json()
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-")
    assert body["choices"][0]["text"] == "ab" and body["choices"][0]["finish_reason"] == "length"
    resp = client.post("/v1/completions", json={"model": "alpha", "prompt": "xyz", "stream": True})
    events = sse_events(resp.text)
    assert "".join(e["choices"][0]["text"] for e in events) == "xyz"


def test_models_lists_every_model_and_its_state(client: TestClient) -> None:
    data = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    assert data["alpha"]["loaded"] and data["alpha"]["context_length"] == 512
    assert data["alpha"]["backend"] == "fake" and data["alpha"]["aliases"] == ["a"]
    assert data["gamma"]["state"] == "failed" and "missing.fake" in data["gamma"]["error"]


def test_health_and_metrics(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    # gamma failed to load, so the server is alive but not ready
    error = assert_error(client.get("/health/ready"), 503, code="model_unavailable")
    assert "gamma" in error["message"] and "missing.fake" in error["message"]
    client.post(CHAT, json=chat_body("count me"))
    text = client.get("/metrics").text
    assert 'hearth_generation_tokens_total{model="alpha"} 8' in text
    assert "hearth_time_to_first_token_seconds_bucket" in text
    # The loaded model's router figures under vLLM's names; gamma never loaded.
    assert 'vllm:num_requests_waiting{model_name="alpha"} 0' in text
    assert 'vllm:kv_cache_usage_perc{model_name="alpha"} 0' in text
    assert 'model_name="gamma"' not in text


def test_tokenize_and_detokenize(client: TestClient) -> None:
    tokens = client.post("/tokenize", json={"model": "alpha", "content": "hé"}).json()
    assert tokens == {"tokens": [104, 195, 169], "count": 3}
    text = client.post("/detokenize", json={"model": "alpha", "tokens": [104, 105]}).json()
    assert text == {"content": "hi"}
    resp = client.post("/detokenize", json={"model": "alpha", "tokens": [999]})
    assert_error(resp, 400, param="tokens")


@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        ({"model": "alpha"}, 400, "missing_required_parameter", "messages"),
        (
            {"messages": [{"role": "user", "content": "x"}]},
            400,
            "missing_required_parameter",
            "model",
        ),
        ({**chat_body("x"), "model": "nope"}, 404, "model_not_found", "model"),
        ({**chat_body("x"), "model": "../x"}, 404, "model_not_found", "model"),
        ({**chat_body("x"), "n": 2}, 400, "unsupported_parameter", "n"),
        ({**chat_body("x"), "logprobs": True}, 400, "unsupported_parameter", "logprobs"),
        (
            {**chat_body("x"), "tools": [{"type": "function"}]},
            400,
            None,
            "tools",
        ),
        ({**chat_body("x"), "frobnicate": 1}, 400, "unsupported_parameter", "frobnicate"),
        ({**chat_body("x"), "temperature": 9}, 400, None, "temperature"),
        ({**chat_body("x"), "max_tokens": 0}, 400, None, "max_tokens"),
        ({**chat_body("x"), "stop": [1]}, 400, None, "stop"),
        (
            {"model": "alpha", "messages": [{"role": "robot", "content": "x"}]},
            400,
            None,
            "messages[0].role",
        ),
        ({**chat_body("x" * 100), "max_tokens": 500}, 400, "context_length_exceeded", "max_tokens"),
        ({**chat_body("x"), "model": "gamma"}, 503, "model_unavailable", None),
    ],
)
def test_errors_are_openai_shaped(
    client: TestClient, body: dict[str, Any], status: int, code: str | None, param: str | None
) -> None:
    assert_error(client.post(CHAT, json=body), status, code=code, param=param)


def test_context_error_names_the_counts(client: TestClient) -> None:
    error = assert_error(client.post(CHAT, json={**chat_body("x" * 100), "max_tokens": 500}), 400)
    assert "512" in error["message"] and "500" in error["message"]


def test_malformed_json_wrong_method_and_unknown_route(client: TestClient) -> None:
    resp = client.post(CHAT, content=b"{not json", headers={"content-type": "application/json"})
    assert_error(resp, 400)
    assert_error(client.get(CHAT), 405)
    assert_error(client.get("/v1/nothing"), 404)


def test_a_dead_engine_turns_readiness_off_and_is_reported_for_exit(client: TestClient) -> None:
    hub = client.app.state.hub  # type: ignore[attr-defined]
    assert hub.dead_engines() == []
    engine = hub.engines["alpha"]
    engine.backend.raise_steps = 3
    for _ in range(3):
        client.post(CHAT, json=chat_body("doomed"))
    assert hub.dead_engines() == ["alpha"]
    error = assert_error(client.get("/health/ready"), 503)
    assert "alpha" in error["message"]
    assert_error(client.post(CHAT, json=chat_body("x")), 503, code="model_unavailable")


def test_draining_refuses_new_work_with_503(client: TestClient) -> None:
    hub = client.app.state.hub  # type: ignore[attr-defined]
    hub.start_drain()
    resp = client.post(CHAT, json=chat_body("late"))
    assert_error(resp, 503)
    assert resp.headers["Retry-After"]
    assert_error(client.get("/health/ready"), 503)
    assert client.get("/health").status_code == 200


def test_one_log_line_per_request_without_the_prompt(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="hearth.requests")
    client.post(CHAT, json=chat_body("secret prompt text", max_tokens=3))
    (record,) = [r for r in caplog.records if r.name == "hearth.requests"]
    line = json.loads(record.getMessage())
    assert line["model"] == "alpha" and line["outcome"] == "length"
    assert line["completion_tokens"] == 3 and line["prompt_tokens"] > 0
    assert "secret" not in record.getMessage()


def test_every_generation_leaves_the_drain_count_and_logs_its_outcome(
    client: TestClient, hub: ModelHub, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="hearth.requests")
    client.post(CHAT, json=chat_body("whole", max_tokens=3))
    streamed = client.post(CHAT, json=chat_body("streamed", max_tokens=2, stream=True))
    assert sse_events(streamed.text)[-1]["choices"][0]["finish_reason"] == "length"
    client.post("/v1/completions", json={"model": "alpha", "prompt": "x", "max_tokens": 1})
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "hearth.requests"]
    assert [(line["stream"], line["outcome"]) for line in lines] == [
        (False, "length"), (True, "length"), (False, "length"),
    ]  # fmt: skip
    assert [line["completion_tokens"] for line in lines] == [3, 2, 1]
    assert hub.inflight == 0
