"""Usage counts agree with the server's own tokenizer (/tokenize)."""

from __future__ import annotations

from collections.abc import Callable

import openai
import pytest

pytestmark = pytest.mark.e2e

Tokenize = Callable[..., list[int]]


def _chatml(system: str, user: str) -> str:
    """Qwen2.5's chat template, rendered by hand for a system and a user message."""
    return (
        f"<|im_start|>system\n{system}<|im_end|>\n"
        f"<|im_start|>user\n{user}<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_chat_usage_matches_the_tokenizer(client: openai.OpenAI, tokenize: Tokenize) -> None:
    system, user = "You are terse.", "Describe the ocean in detail."
    messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    r = client.chat.completions.create(
        model="default", messages=messages, temperature=0, max_tokens=7
    )
    assert r.choices[0].finish_reason == "length"
    assert r.usage is not None
    assert r.usage.completion_tokens == 7
    assert r.usage.completion_tokens == len(tokenize(r.choices[0].message.content))
    rendered = tokenize(_chatml(system, user), add_special=True)
    assert r.usage.prompt_tokens == len(rendered)


@pytest.mark.parametrize("model", ["default", "gemma3"])
def test_completion_usage_matches_the_tokenizer(
    client: openai.OpenAI, tokenize: Tokenize, model: str
) -> None:
    prompt = "The three primary colors are"
    r = client.completions.create(model=model, prompt=prompt, temperature=0, max_tokens=6)
    assert r.choices[0].finish_reason == "length"
    assert r.usage is not None
    assert r.usage.prompt_tokens == len(tokenize(prompt, add_special=True, model=model))
    assert r.usage.completion_tokens == 6
    assert r.usage.completion_tokens == len(tokenize(r.choices[0].text, model=model))
