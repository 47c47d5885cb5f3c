"""Stop strings: never in the output, even when one spans several tokens."""

from __future__ import annotations

from typing import Any

import openai
import pytest

pytestmark = pytest.mark.e2e

COUNT = [
    {"role": "user", "content": "Count from 1 to 10, separated by commas. Output only the numbers."}
]
# "," and "4" are separate tokens for this model, so ",4" spans two of them.
STOP = ",4"


def _count(client: openai.OpenAI, **extra: Any) -> tuple[str, str]:
    r = client.chat.completions.create(
        model="default", messages=COUNT, temperature=0, max_tokens=30, **extra
    )
    return r.choices[0].message.content or "", r.choices[0].finish_reason


def test_the_model_produces_the_stop_string(client: openai.OpenAI) -> None:
    text, _ = _count(client)
    assert STOP in text.replace(" ", ""), text


def test_stop_string_cuts_the_answer(client: openai.OpenAI) -> None:
    text, finish = _count(client, stop=[STOP])
    assert finish == "stop"
    assert STOP not in text
    assert text.replace(" ", "") == "1,2,3"


def test_stop_string_never_leaks_into_a_stream(client: openai.OpenAI) -> None:
    with client.chat.completions.create(
        model="default", messages=COUNT, temperature=0, max_tokens=30, stop=[STOP], stream=True
    ) as stream:
        chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert STOP not in text
    assert text.replace(" ", "") == "1,2,3"
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_stop_string_in_completions(client: openai.OpenAI) -> None:
    prompt = "Count: 1, 2, 3,"
    whole = client.completions.create(model="default", prompt=prompt, temperature=0, max_tokens=12)
    assert " 6," in whole.choices[0].text
    r = client.completions.create(
        model="default", prompt=prompt, temperature=0, max_tokens=12, stop=[" 6,"]
    )
    assert r.choices[0].finish_reason == "stop"
    assert " 6," not in r.choices[0].text
    assert whole.choices[0].text.startswith(r.choices[0].text)
