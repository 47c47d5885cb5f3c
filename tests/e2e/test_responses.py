"""The real ``openai`` SDK's Responses API against a real server and the default model."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

pytestmark = pytest.mark.e2e

WEATHER: Any = {
    "type": "function", "name": "get_weather", "strict": False,
    "description": "Get the current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]},
}  # fmt: skip
ASK = "What is 2 + 2? Answer with the number only."


def test_create_answers_with_usage(client: openai.OpenAI) -> None:
    r = client.responses.create(model="default", input=ASK, temperature=0, max_output_tokens=16)
    assert r.status == "completed" and "4" in r.output_text
    assert r.usage is not None and r.usage.output_tokens > 0
    assert r.usage.input_tokens > 10 and r.usage.input_tokens_details.cached_tokens >= 0


def test_the_stream_gives_typed_events_and_the_same_text(client: openai.OpenAI) -> None:
    whole = client.responses.create(model="default", input=ASK, temperature=0, store=False)
    with client.responses.stream(model="default", input=ASK, temperature=0, store=False) as s:
        deltas = [e.delta for e in s if e.type == "response.output_text.delta"]
        final = s.get_final_response()
    assert "".join(deltas) == final.output_text == whole.output_text


def _call_then_answer(client: openai.OpenAI, *, chained: bool) -> str:
    question: Any = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client.responses.create(
        model="default", input=question, tools=[WEATHER], tool_choice="required", temperature=0
    )
    call = next(o for o in first.output if o.type == "function_call")
    assert call.name == "get_weather" and "paris" in call.arguments.lower()
    result = {"type": "function_call_output", "call_id": call.call_id,
              "output": json.dumps({"sky": "sunny", "celsius": 17})}  # fmt: skip
    if chained:
        answer = client.responses.create(
            model="default", previous_response_id=first.id, input=[result], tools=[WEATHER],
            temperature=0, max_output_tokens=60,
        )  # fmt: skip
    else:
        resent = [*question, *(o.model_dump(exclude_none=True) for o in first.output), result]
        answer = client.responses.create(
            model="default", input=resent, tools=[WEATHER], temperature=0, max_output_tokens=60,
            store=False,
        )  # fmt: skip
    assert answer.status == "completed"
    assert answer.usage is not None and answer.usage.input_tokens_details.cached_tokens > 0
    return answer.output_text


@pytest.mark.parametrize("chained", [True, False], ids=["previous_response_id", "resent"])
def test_a_function_call_round_trip(client: openai.OpenAI, chained: bool) -> None:
    assert "17" in _call_then_answer(client, chained=chained)


def test_text_format_json_schema(client: openai.OpenAI) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}},
              "required": ["city"], "additionalProperties": False}  # fmt: skip
    r = client.responses.create(
        model="default", input="Name the capital of France as JSON.", temperature=0,
        text={"format": {"type": "json_schema", "name": "capital", "schema": schema}},
    )  # fmt: skip
    assert "paris" in json.loads(r.output_text)["city"].lower()


def test_errors_are_the_sdks_typed_exceptions(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="default", input=ASK, previous_response_id="resp_gone")
    with pytest.raises(openai.BadRequestError, match="truncation"):
        client.responses.create(model="default", input=ASK, truncation="auto")
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="gpt-9", input=ASK)
