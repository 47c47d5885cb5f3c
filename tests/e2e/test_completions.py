"""/v1/completions with a string prompt, streamed and not, through the openai client."""

from __future__ import annotations

import re

import openai
import pytest

pytestmark = pytest.mark.e2e

PROMPT = "def fibonacci(n):\n    "


def test_completion_shape(client: openai.OpenAI) -> None:
    r = client.completions.create(model="default", prompt=PROMPT, temperature=0, max_tokens=12)
    assert r.id.startswith("cmpl-")
    assert r.object == "text_completion"
    assert r.model == "qwen2.5-coder-0.5b"
    assert len(r.choices) == 1
    choice = r.choices[0]
    assert choice.index == 0
    assert choice.finish_reason == "length"
    assert re.search(r"\w", choice.text)
    assert r.usage is not None
    assert r.usage.completion_tokens == 12
    assert r.usage.total_tokens == r.usage.prompt_tokens + 12


def test_completion_stream_matches_non_streamed(client: openai.OpenAI) -> None:
    whole = client.completions.create(model="default", prompt=PROMPT, temperature=0, max_tokens=12)
    with client.completions.create(
        model="default",
        prompt=PROMPT,
        temperature=0,
        max_tokens=12,
        stream=True,
        stream_options={"include_usage": True},
    ) as stream:
        chunks = list(stream)
    assert all(c.id.startswith("cmpl-") and c.object == "text_completion" for c in chunks)
    usage_chunk, body = chunks[-1], chunks[:-1]
    assert usage_chunk.choices == []
    assert usage_chunk.usage is not None
    assert usage_chunk.usage.completion_tokens == 12
    assert whole.usage is not None
    assert usage_chunk.usage.prompt_tokens == whole.usage.prompt_tokens
    assert "".join(c.choices[0].text for c in body) == whole.choices[0].text
    assert body[-1].choices[0].finish_reason == "length"
    assert all(c.choices[0].finish_reason is None for c in body[:-1])
