"""Input limits, body size and request timeouts, in-process over the fake backend."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient
from starlette.types import Message

from server.api.app import create_app
from server.api.body import MAX_BODY_BYTES
from server.api.openai import messages as chat_messages
from server.api.openai import schemas
from server.engine.hub import ModelHub
from server.settings import Settings
from tests.api.conftest import BASE_URL
from tests.api.test_api import assert_error, chat_body, sse_events
from tests.fakes import FakeBackend

CHAT = "/v1/chat/completions"


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 10**9}, "n"),
        ({"n": True}, "n"),
        ({"n": 1.5}, "n"),
        ({"top_logprobs": 21}, "top_logprobs"),
        ({"top_logprobs": -1}, "top_logprobs"),
        ({"top_logprobs": 2.0}, "top_logprobs"),
        ({"top_logprobs": 5}, "top_logprobs"),  # within the limit, not supported yet
        ({"logit_bias": {str(i): 1 for i in range(1025)}}, "logit_bias"),
        ({"logit_bias": {"257": 1}}, "logit_bias"),  # the fake's vocabulary is 257
        ({"logit_bias": {"-1": 1}}, "logit_bias"),
        ({"logit_bias": {"9" * 5000: 1}}, "logit_bias"),
        ({"logit_bias": {"1": 101}}, "logit_bias"),
        ({"logit_bias": {"1": True}}, "logit_bias"),
        ({"logit_bias": [1, 2]}, "logit_bias"),
        ({"logit_bias": {"1": 5}}, "logit_bias"),  # within the limits, not supported yet
        ({"seed": 2**64}, "seed"),
        ({"seed": 1e300}, "seed"),
        ({"top_k": 10**6}, "top_k"),
        ({"temperature": 1e308}, "temperature"),
        ({"max_tokens": 10**30}, "max_tokens"),  # past the context: OpenAI's 400
        ({"chat_template": "{{ 1 }}"}, "chat_template"),
        ({"chat_template_kwargs": {"messages": []}}, "chat_template_kwargs"),
        ({"chat_template_kwargs": {"enable_thinking": "yes"}}, "chat_template_kwargs"),
        ({"chat_template_kwargs": ["enable_thinking"]}, "chat_template_kwargs"),
        ({"reasoning_effort": "extreme"}, "reasoning_effort"),
    ],
)
def test_out_of_range_fields_are_refused(
    client: TestClient, extra: dict[str, Any], param: str
) -> None:
    assert_error(client.post(CHAT, json=chat_body("x", **extra)), 400, param=param)


def test_too_many_messages(client: TestClient) -> None:
    messages = [{"role": "user", "content": "x"}] * (chat_messages.MAX_MESSAGES + 1)
    resp = client.post(CHAT, json={"model": "alpha", "messages": messages})
    assert_error(resp, 400, code="too_long", param="messages")
    # 1,024 pass the parser; the fake's 512-token context is what refuses them.
    resp = client.post(CHAT, json={"model": "alpha", "messages": messages[:-1]})
    assert_error(resp, 400, code="context_length_exceeded")


def test_message_text_is_bounded_in_all() -> None:
    half = "x" * (chat_messages.MAX_PROMPT_CHARS // 2 + 1)
    body = {"model": "m", "messages": [{"role": "user", "content": half}] * 2}
    with pytest.raises(schemas.InvalidRequest, match="characters in all"):
        schemas.parse_chat(body, FakeSampling.defaults(), model="m")
    with pytest.raises(schemas.InvalidRequest, match="characters"):
        schemas.parse_completion(
            {"model": "m", "prompt": half * 2}, FakeSampling.defaults(), model="m"
        )


def test_a_large_seed_keeps_every_bit() -> None:
    body = chat_body("x", seed=2**62 + 1)
    parsed = schemas.parse_chat(body, FakeSampling.defaults(), model="m")
    assert parsed.generation.sampling.seed == 2**62 + 1


def test_limits_apply_to_logit_bias_and_top_logprobs_once_supported() -> None:
    assert schemas.check_logit_bias({"0": -100, "1023": 100.0}, 1024) == {0: -100.0, 1023: 100.0}
    assert schemas.check_top_logprobs(20) == 20
    assert schemas.check_top_logprobs(0) == 0


def test_a_declared_huge_body_is_refused_before_reading(client: TestClient) -> None:
    """413 from Content-Length alone: the app never asks for the body."""
    app = client.app
    sent: list[Message] = []
    scope = {
        "type": "http", "method": "POST", "path": CHAT, "raw_path": CHAT.encode(),
        "query_string": b"", "root_path": "", "scheme": "http", "http_version": "1.1",
        "server": ("localhost", 8080), "client": ("127.0.0.1", 5000),
        "headers": [
            (b"host", b"localhost:8080"),
            (b"content-type", b"application/json"),
            (b"content-length", str(10**12).encode()),
        ],
    }  # fmt: skip

    async def receive() -> Message:
        raise AssertionError("the body was read")

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))  # type: ignore[arg-type]
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 413
    assert b'"request_too_large"' in sent[1]["body"]


def test_a_streamed_chunked_body_is_cut_at_the_limit(client: TestClient) -> None:
    chunk = b"x" * 65536

    def body() -> Iterator[bytes]:
        yield b'{"model": "alpha", "messages": "'
        for _ in range(2 * MAX_BODY_BYTES // len(chunk)):
            yield chunk

    resp = client.post(CHAT, content=body(), headers={"content-type": "application/json"})
    assert_error(resp, 413, code="request_too_large")
    assert resp.request.headers["transfer-encoding"] == "chunked"
    assert client.post(CHAT, json=chat_body("still here")).status_code == 200


class FakeSampling:
    @staticmethod
    def defaults() -> Any:
        from backends.base import SamplingParams

        return SamplingParams()


@pytest.fixture
def slow(hub: ModelHub) -> Iterator[tuple[TestClient, FakeBackend]]:
    """The app with 0.3 s timeouts, and alpha's backend holding every step."""
    settings = Settings(request_timeout=0.6, first_token_timeout=0.3)
    with TestClient(
        create_app(hub, settings), base_url=BASE_URL, raise_server_exceptions=False
    ) as client:
        backend = hub.engines["alpha"].backend
        assert isinstance(backend, FakeBackend)
        yield client, backend
        backend.gate.set()


def _released(backend: FakeBackend, count: int) -> bool:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if len(backend.released) >= count:
            return True
        time.sleep(0.01)
    return False


def test_a_stuck_request_is_a_504_and_frees_the_sequence(
    slow: tuple[TestClient, FakeBackend],
) -> None:
    client, backend = slow
    backend.gate.clear()
    started = time.monotonic()
    resp = client.post(CHAT, json=chat_body("stuck"))
    assert time.monotonic() - started < 3
    error = assert_error(resp, 504, code="request_timeout")
    assert error["type"] == "timeout_error"
    backend.gate.set()
    assert _released(backend, 1)
    assert client.post(CHAT, json=chat_body("next")).status_code == 200


def test_a_stream_past_its_timeout_ends_with_an_error_event(
    slow: tuple[TestClient, FakeBackend],
) -> None:
    client, backend = slow
    backend.gate.clear()
    resp = client.post(CHAT, json=chat_body("stuck", stream=True))
    assert resp.status_code == 200
    events = sse_events(resp.text)
    assert events[-1]["error"]["code"] == "request_timeout"
    backend.gate.set()
    assert _released(backend, 1)


def test_a_request_left_waiting_in_the_queue_is_cut_at_the_admission_limit(
    slow: tuple[TestClient, FakeBackend],
) -> None:
    """The engine holds its first request's step: that request was admitted and runs
    to the whole-request limit; one sent after it waits to be admitted and is cut at
    HEARTH_FIRST_TOKEN_TIMEOUT, sooner."""
    client, backend = slow
    backend.gate.clear()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        admitted = pool.submit(client.post, CHAT, json=chat_body("first"))
        time.sleep(0.15)  # admitted at once; its step then waits on the gate
        waiting = client.post(CHAT, json=chat_body("second"))
        assert_error(waiting, 504, code="first_token_timeout")
        assert "not admitted" in waiting.json()["error"]["message"]
        assert_error(admitted.result(), 504, code="request_timeout")
    backend.gate.set()


def test_deeply_nested_json_is_a_400(client: TestClient) -> None:
    body = b'{"model": "alpha", "messages": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    resp = client.post(CHAT, content=body, headers={"content-type": "application/json"})
    assert_error(resp, 400)
    assert "nested" in resp.json()["error"]["message"]


def test_a_number_too_long_to_parse_is_a_400(client: TestClient) -> None:
    def send(seed: bytes) -> Any:
        body = (
            json.dumps(chat_body("hi", seed=0)).encode().replace(b'"seed": 0', b'"seed": ' + seed)
        )
        return client.post(CHAT, content=body, headers={"content-type": "application/json"})

    assert send(b"7").status_code == 200  # the request is valid but for the number
    error = assert_error(send(b"9" * 5000), 400, param=None)
    assert error["message"].startswith("the request body is not valid JSON")
    assert "digits" in error["message"]  # Python's limit on integer literals, 4,300 digits


def test_headers_over_the_limit_are_a_431(client: TestClient) -> None:
    resp = client.get("/health", headers={"X-Flood": "a" * 20_000})
    assert_error(resp, 431, code="request_header_fields_too_large")
    assert client.get("/health", headers={"X-Fine": "a" * 8_000}).status_code == 200
