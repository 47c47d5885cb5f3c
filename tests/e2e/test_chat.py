"""/v1/chat/completions through the real openai client, streamed and not."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import httpx
import openai
import pytest

from tests.e2e.conftest import wait_idle

pytestmark = pytest.mark.e2e

Tokenize = Callable[..., list[int]]

FRANCE = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
# A copying task: every greedy choice wins by a wide margin, so where the KV cells lie in
# a long-running server (which changes the last bits of the logits) cannot tip it.
COPY = [{"role": "user", "content": "Repeat exactly, nothing else: "
         "def total(items): return sum(item.price for item in items)"}]  # fmt: skip


def test_chat_shape_and_answer(client: openai.OpenAI) -> None:
    before = int(time.time())
    r = client.chat.completions.create(
        model="default", messages=FRANCE, temperature=0, max_tokens=8
    )
    assert r.id.startswith("chatcmpl-")
    assert r.object == "chat.completion"
    assert before - 5 <= r.created <= time.time() + 5
    assert r.model == "qwen2.5-coder-0.5b"
    assert len(r.choices) == 1
    choice = r.choices[0]
    assert choice.index == 0
    assert choice.message.role == "assistant"
    assert choice.finish_reason in ("stop", "length")
    assert re.search(r"Paris", choice.message.content or "")
    assert r.usage is not None
    assert r.usage.prompt_tokens > 0
    assert 1 <= r.usage.completion_tokens <= 8
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_stream_matches_non_streamed(client: openai.OpenAI, base_url: str) -> None:
    # A seed prefills each afresh: reusing the first one's KV would recompute only the
    # last prompt token, alone, whose logits differ in the last bits (README, "Seeds").
    # Each runs alone in the batch, for the same reason.
    wait_idle(base_url)
    whole = client.chat.completions.create(
        model="default", messages=COPY, temperature=0, max_tokens=20, seed=7
    )
    expected = whole.choices[0].message.content
    with client.chat.completions.create(
        model="default", messages=COPY, temperature=0, max_tokens=20, stream=True, seed=7
    ) as stream:
        chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.id == chunks[0].id and c.id.startswith("chatcmpl-") for c in chunks)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert all(c.model == "qwen2.5-coder-0.5b" for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == expected
    assert len(text) > 10
    finishes = [c.choices[0].finish_reason for c in chunks]
    assert finishes[-1] == whole.choices[0].finish_reason in ("stop", "length")
    assert all(f is None for f in finishes[:-1])
    assert all(c.usage is None for c in chunks)


def test_stream_include_usage(client: openai.OpenAI) -> None:
    with client.chat.completions.create(
        model="default",
        messages=FRANCE,
        temperature=0,
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
    ) as stream:
        chunks = list(stream)
    last, before_last = chunks[-1], chunks[-2]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.prompt_tokens > 0
    assert 1 <= last.usage.completion_tokens <= 8
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    assert before_last.choices[0].finish_reason in ("stop", "length")
    assert all(c.usage is None for c in chunks[:-1])
    assert re.search(r"Paris", "".join(c.choices[0].delta.content or "" for c in chunks[:-1]))


@pytest.mark.parametrize("limit", ["max_tokens", "max_completion_tokens"])
def test_token_limit_finishes_with_length(client: openai.OpenAI, limit: str) -> None:
    messages = [{"role": "user", "content": "Tell me a long story about a dragon."}]
    r = client.chat.completions.create(
        model="default", messages=messages, temperature=0, **{limit: 5}
    )
    assert r.choices[0].finish_reason == "length"
    assert r.usage is not None
    assert r.usage.completion_tokens == 5
    assert r.choices[0].message.content


def test_multibyte_characters_stream_whole(
    client: openai.OpenAI, http: httpx.Client, tokenize: Tokenize
) -> None:
    messages = [{"role": "user", "content": "Reply with only this text: 你好世界 🎉🎉"}]
    with client.chat.completions.create(
        model="default", messages=messages, temperature=0, max_tokens=20, stream=True
    ) as stream:
        deltas = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert all("\ufffd" not in d for d in deltas), deltas
    text = "".join(deltas)
    assert re.search(r"[\u4e00-\u9fff]", text), text
    assert re.search(r"[\U0001F300-\U0001FAFF]", text), text
    assert "你好" in text
    assert "🎉" in text
    # The answer holds tokens that are not whole characters on their own (" 🎉" is three
    # byte-level tokens here), so whole deltas prove the server held partial bytes back.
    pieces = [
        http.post("/detokenize", json={"model": "default", "tokens": [t]}).json()["content"]
        for t in tokenize(text)
    ]
    assert any("\ufffd" in p for p in pieces), pieces
