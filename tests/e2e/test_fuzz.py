"""Fuzz a real server with generated requests, valid and invalid.

Every known field gets either a plausible value or any JSON value (huge numbers,
unicode, deep nesting); unknown fields, wrong types and raw bodies come too. Replies
must never be a 5xx other than a deliberate 503, every error must have exactly
OpenAI's shape, and the server must answer normally afterwards. A generation is at
most 2 tokens, so the run stays short.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.e2e

EXAMPLES = 1200
ERROR_FIELDS = {"message", "type", "param", "code"}

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
texts = st.text(max_size=120)
small_tokens = st.sampled_from([1, 2])
bad_tokens = st.one_of(st.integers(max_value=0), st.just(10**30), st.text(max_size=3), st.floats())
parts = st.lists(
    st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url", "x"]), "text": texts}),
    min_size=1,
    max_size=3,
)
message = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["system", "developer", "user", "assistant", "tool", "", "USER"]),
        "content": st.one_of(texts, parts, json_values),
    },
    optional={"name": st.text(max_size=10), "tool_calls": json_values},
)


PLAUSIBLE: dict[str, st.SearchStrategy[Any]] = {
    "temperature": st.floats(0, 2),
    "top_p": st.floats(0, 1),
    "top_k": st.integers(0, 100),
    "min_p": st.floats(0, 1),
    "presence_penalty": st.floats(-2, 2),
    "frequency_penalty": st.floats(-2, 2),
    "seed": st.integers(-(2**63), 2**63 - 1),
    "stop": st.one_of(texts, st.lists(st.text(max_size=8), max_size=16)),
    "stream": st.booleans(),
    "user": texts,
    "n": st.just(1),
    "logprobs": st.just(False),
    "ignore_eos": st.booleans(),
}
# Fields only the fuzzing mode sends: refused, or valid only with other fields.
REFUSED: dict[str, st.SearchStrategy[Any]] = {
    "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
    "n": st.sampled_from([2, 10**9]),
    "logit_bias": json_values,
    "top_logprobs": st.integers(-5, 30),
    "tools": json_values,
    "response_format": json_values,
    "chat_template": texts,
    "chat_template_kwargs": json_values,
}
VALID_MODELS = st.sampled_from(["default", "qwen2.5-coder-0.5b", "qwen2.5-coder", "gemma3"])
MODELS = st.one_of(VALID_MODELS, st.sampled_from(["../x", "/dev/random", "", "nope"]))
valid_message = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "developer", "user", "assistant"]), "content": texts}
)


@st.composite
def raw_bodies(draw: st.DrawFn) -> bytes:
    return draw(
        st.one_of(
            st.binary(max_size=200),
            st.integers(1, 3000).map(lambda d: b"[" * d + b"]" * d),
            json_values.map(lambda v: json.dumps(v).encode()),
        )
    )


@st.composite
def bodies(draw: st.DrawFn) -> tuple[str, bytes]:
    """(path, body): a valid request, a fuzzed one (any JSON in any field), or raw bytes."""
    chat = draw(st.integers(0, 3)) > 0
    path = "/v1/chat/completions" if chat else "/v1/completions"
    mode = draw(st.sampled_from(["valid", "fuzz", "fuzz", "raw"]))
    if mode == "raw":
        return path, draw(raw_bodies())
    fuzz = mode == "fuzz"

    def value(plausible: st.SearchStrategy[Any]) -> Any:
        return draw(st.one_of(plausible, plausible, plausible, json_values) if fuzz else plausible)

    fields: dict[str, Any] = {"model": value(MODELS if fuzz else VALID_MODELS)}
    if chat:
        fields["messages"] = value(
            st.lists(message if fuzz else valid_message, min_size=1, max_size=4)
        )
    else:
        fields["prompt"] = value(texts.filter(bool))
    # Always present and small when valid, so no generation runs past 2 tokens.
    fields["max_tokens"] = draw(
        st.one_of(small_tokens, small_tokens, bad_tokens) if fuzz else small_tokens
    )
    if chat and draw(st.booleans()):
        fields["max_completion_tokens"] = draw(
            st.one_of(small_tokens, bad_tokens) if fuzz else small_tokens
        )
    for name in draw(st.lists(st.sampled_from(sorted(PLAUSIBLE)), unique=True, max_size=6)):
        fields[name] = value(PLAUSIBLE[name])
    if fuzz:
        for name in draw(st.lists(st.sampled_from(sorted(REFUSED)), unique=True, max_size=2)):
            fields[name] = value(REFUSED[name])
        if draw(st.booleans()):
            fields[draw(st.text(min_size=1, max_size=12))] = draw(json_values)
    return path, json.dumps(fields).encode()


@pytest.fixture(scope="module")
def fuzz_http(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=120) as client:
        yield client


def check(resp: httpx.Response) -> None:
    assert resp.status_code < 500 or resp.status_code == 503, resp.text
    if resp.status_code != 200:
        body = resp.json()
        assert set(body) == {"error"}, body
        assert set(body["error"]) == ERROR_FIELDS, body
        assert isinstance(body["error"]["message"], str) and body["error"]["message"]


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(request=bodies())
def test_fuzzed_requests_get_answers_or_clean_errors(
    fuzz_http: httpx.Client, request: tuple[str, bytes]
) -> None:
    path, body = request
    headers = {"Content-Type": "application/json"}
    with fuzz_http.stream("POST", path, content=body, headers=headers) as resp:
        resp.read()
    event(f"{path} {resp.status_code}")  # pytest --hypothesis-show-statistics
    check(resp)
    if resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream"):
        assert resp.text.rstrip().endswith("data: [DONE]"), resp.text[-200:]


def test_the_server_answers_normally_after_the_fuzz(fuzz_http: httpx.Client) -> None:
    body = {"model": "default", "messages": [{"role": "user", "content": "Say hi."}]}
    resp = fuzz_http.post("/v1/chat/completions", json={**body, "max_tokens": 4})
    assert resp.status_code == 200, resp.text
    assert resp.json()["usage"]["completion_tokens"] <= 4
    assert fuzz_http.get("/health/ready").status_code == 200


def test_penalties_generate(fuzz_http: httpx.Client) -> None:
    """Found by the fuzz: a penalty once built its sampler with the wrong arguments and
    the engine died with it."""
    body = {
        "model": "default", "max_tokens": 4, "presence_penalty": 1.5, "frequency_penalty": -1,
        "messages": [{"role": "user", "content": "Say hi."}],
    }  # fmt: skip
    resp = fuzz_http.post("/v1/chat/completions", json=body)
    assert resp.status_code == 200, resp.text
    assert 0 < resp.json()["usage"]["completion_tokens"] <= 4
