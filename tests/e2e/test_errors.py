"""Every error has the OpenAI shape, the right status, type, param and code."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

pytestmark = pytest.mark.e2e

Tokenize = Callable[..., list[int]]

CHAT = "/v1/chat/completions"
HELLO = [{"role": "user", "content": "Hello"}]


def _error(response: httpx.Response, status: int) -> dict[str, Any]:
    """The error object of ``response``, after checking the envelope exactly."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert "Traceback" not in response.text
    body = response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    return error


def _post_raw(http: httpx.Client, path: str, content: bytes) -> httpx.Response:
    return http.post(path, content=content, headers={"Content-Type": "application/json"})


@pytest.mark.parametrize(
    ("content", "message"),
    [(b'{"model": "default", "messages": [', "not valid JSON"), (b"\xff\xfe", "not valid JSON"),
     (b"[]", "JSON object")],
    ids=["truncated", "not-utf8", "array"],
)  # fmt: skip
def test_malformed_body(http: httpx.Client, content: bytes, message: str) -> None:
    error = _error(_post_raw(http, CHAT, content), 400)
    assert error["type"] == "invalid_request_error"
    assert message in error["message"]


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"model": "default"}, "messages", "missing_required_parameter"),
        ({"messages": HELLO}, "model", "missing_required_parameter"),
        ({"model": "default", "messages": HELLO, "n": 2}, "n", "unsupported_parameter"),
        ({"model": "default", "messages": HELLO, "logprobs": True}, "logprobs",
         "unsupported_parameter"),
        ({"model": "default", "messages": HELLO, "frobnicate": 1}, "frobnicate",
         "unsupported_parameter"),
        ({"model": "default", "messages": HELLO, "tools": [{"type": "function"}]}, "tools",
         None),
        ({"model": "default", "messages": HELLO, "temperature": 3}, "temperature", None),
        ({"model": "default", "messages": HELLO, "max_tokens": 0}, "max_tokens", None),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)  # fmt: skip
def test_bad_request_names_the_field(
    http: httpx.Client, body: dict[str, Any], param: str, code: str | None
) -> None:
    error = _error(http.post(CHAT, json=body), 400)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert error["code"] == code
    assert f"'{param}'" in error["message"] or f"{param} " in error["message"]


def test_unknown_model(http: httpx.Client) -> None:
    error = _error(http.post(CHAT, json={"model": "no-such-model", "messages": HELLO}), 404)
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "model_not_found"
    assert error["param"] == "model"
    assert "no-such-model" in error["message"]


def test_context_length_exceeded_gives_the_counts(http: httpx.Client, tokenize: Tokenize) -> None:
    prompt = "Once upon a time"
    body = {"model": "gemma3", "prompt": prompt, "max_tokens": 9000}
    error = _error(http.post("/v1/completions", json=body), 400)
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "context_length_exceeded"
    assert error["param"] == "max_tokens"
    n = len(tokenize(prompt, add_special=True, model="gemma3"))
    assert "context is 8192 tokens" in error["message"]
    assert f"the prompt has {n} " in error["message"]
    assert f"{n + 9000} in all" in error["message"]


def test_chat_context_length_exceeded(http: httpx.Client) -> None:
    body = {"model": "default", "messages": HELLO, "max_tokens": 40000}
    error = _error(http.post(CHAT, json=body), 400)
    assert error["code"] == "context_length_exceeded"
    assert "32768" in error["message"] and "40000" in error["message"]


def test_prompt_alone_over_the_context(http: httpx.Client) -> None:
    body = {"model": "gemma3", "prompt": "hello " * 9000}
    error = _error(http.post("/v1/completions", json=body), 400)
    assert error["code"] == "context_length_exceeded"
    assert error["param"] == "prompt"
    assert "8192" in error["message"]


def test_wrong_method(http: httpx.Client) -> None:
    error = _error(http.get(CHAT), 405)
    assert error["code"] == "method_not_allowed"


def test_unknown_route(http: httpx.Client) -> None:
    error = _error(http.get("/v1/nothing-here"), 404)
    assert error["type"] == "not_found_error"


def test_openai_client_raises_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="no-such-model", messages=HELLO, max_tokens=5)
    assert caught.value.status_code == 404
    assert caught.value.code == "model_not_found"


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"max_tokens": 40000}, "max_tokens"),
        ({"extra_body": {"frobnicate": 1}}, "frobnicate"),
    ],
)
def test_openai_client_raises_bad_request(
    client: openai.OpenAI, extra: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="default", messages=HELLO, **extra)
    assert caught.value.status_code == 400
    assert caught.value.param == param
