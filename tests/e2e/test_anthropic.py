"""The real ``anthropic`` SDK against a real server and the default model."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

pytestmark = pytest.mark.e2e

WEATHER = {
    "name": "get_weather",
    "description": "Get the current weather in a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string", "description": "The city"}},
        "required": ["city"],
    },
}
# Today's SDK no longer sends sampling settings; hearth still honours them.
GREEDY: dict[str, Any] = {"extra_body": {"temperature": 0}}
ASK = [{"role": "user", "content": "What is 2 + 2? Answer with the number only."}]


@pytest.fixture(scope="module")
def claude(base_url: str) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=base_url, api_key="unused", max_retries=0) as client:
        yield client


def test_a_message_answers_with_usage(claude: anthropic.Anthropic) -> None:
    msg = claude.messages.create(model="default", max_tokens=16, **GREEDY, messages=ASK)
    assert msg.type == "message" and msg.role == "assistant" and msg.model == "default"
    assert msg.stop_reason == "end_turn"
    (block,) = msg.content
    assert block.type == "text" and "4" in block.text
    assert msg.usage.output_tokens > 0
    assert msg.usage.input_tokens + (msg.usage.cache_read_input_tokens or 0) > 10


def test_the_stream_accumulates_to_the_same_message(claude: anthropic.Anthropic) -> None:
    whole = claude.messages.create(model="default", max_tokens=40, **GREEDY, messages=ASK)
    with claude.messages.stream(model="default", max_tokens=40, **GREEDY, messages=ASK) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(pieces) == final.content[0].text == whole.content[0].text  # type: ignore[union-attr]
    assert final.stop_reason == whole.stop_reason
    assert final.usage.output_tokens == whole.usage.output_tokens


def test_a_tool_use_round_trip(claude: anthropic.Anthropic) -> None:
    question: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = claude.messages.create(
        model="default", max_tokens=200, **GREEDY, tools=[WEATHER],  # type: ignore[list-item]
        tool_choice={"type": "any"}, messages=question,
    )  # fmt: skip
    assert first.stop_reason == "tool_use"
    call = next(b for b in first.content if b.type == "tool_use")
    assert call.name == "get_weather" and "paris" in str(call.input).lower()  # type: ignore[union-attr]
    result = {
        "type": "tool_result", "tool_use_id": call.id,  # type: ignore[union-attr]
        "content": [{"type": "text", "text": '{"sky": "sunny", "celsius": 17}'}],
    }  # fmt: skip
    turn = [*question, {"role": "assistant", "content": first.content},
            {"role": "user", "content": [result]}]  # fmt: skip
    answer = claude.messages.create(
        model="default", max_tokens=60, **GREEDY, tools=[WEATHER],  # type: ignore[list-item]
        messages=turn,
    )  # fmt: skip
    assert answer.stop_reason == "end_turn"
    assert "17" in answer.content[0].text  # type: ignore[union-attr]
    assert (answer.usage.cache_read_input_tokens or 0) > 0  # the first turn's prefix


def test_count_tokens_is_the_prompt_a_message_uses(claude: anthropic.Anthropic) -> None:
    counted = claude.messages.count_tokens(model="default", messages=ASK)  # type: ignore[arg-type]
    msg = claude.messages.create(model="default", max_tokens=4, **GREEDY, messages=ASK)
    used = msg.usage.input_tokens + (msg.usage.cache_read_input_tokens or 0)
    assert counted.input_tokens == used


def test_max_tokens_past_the_context_is_a_ceiling(claude: anthropic.Anthropic) -> None:
    # The SDK streams a request this large (as Claude Code does): 64,000 > the context.
    with claude.messages.stream(model="default", max_tokens=64000, messages=ASK, **GREEDY) as s:
        assert s.get_final_message().stop_reason == "end_turn"
    short = claude.messages.create(
        model="default", max_tokens=3,
        messages=[{"role": "user", "content": "Count from one to fifty in words."}], **GREEDY,
    )  # fmt: skip
    assert short.stop_reason == "max_tokens" and short.usage.output_tokens == 3


def test_errors_are_the_sdks_typed_exceptions(claude: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as missing:
        claude.messages.create(model="claude-opus-4-8", max_tokens=8, messages=ASK)
    assert missing.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": ""}}
    with pytest.raises(anthropic.BadRequestError):
        claude.messages.create(
            model="default", max_tokens=8, messages=[{"role": "user", "content": [image]}]
        )
    with pytest.raises(anthropic.BadRequestError, match="context"):
        claude.messages.create(
            model="default", max_tokens=8, messages=[{"role": "user", "content": "x " * 40000}]
        )
