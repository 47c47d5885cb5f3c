"""The tool-call parser on canned model outputs, whole and split into many deltas."""

from __future__ import annotations

import json

import pytest

from backends.base import Tool
from server.engine.parsers import matches
from server.engine.parsers.hermes import HermesParser as ToolCallParser
from server.engine.requests import TextDelta, ToolCallDelta

WEATHER = Tool(
    "get_weather",
    "The weather in a city",
    json.dumps(
        {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
            "required": ["city"],
        }
    ),
)
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


def run(
    text: str, chunk: int | None = None, *, parallel: bool = True
) -> tuple[str, list[ToolCallDelta], int]:
    parser = ToolCallParser([WEATHER], parallel=parallel)
    size = chunk or len(text) or 1
    pieces = [p for i in range(0, len(text), size) for p in parser.feed(text[i : i + size])]
    pieces += parser.flush()
    content = "".join(p.text for p in pieces if isinstance(p, TextDelta))
    calls = [p for p in pieces if isinstance(p, ToolCallDelta)]
    return content, calls, parser.failures


@pytest.mark.parametrize("chunk", [None, 1, 2, 3, 7])
def test_one_call_whole_or_split_across_many_deltas(chunk: int | None) -> None:
    content, calls, failures = run(CALL, chunk)
    assert content == "" and failures == 0
    (delta,) = calls
    assert delta.index == 0 and delta.call.name == "get_weather"
    assert json.loads(delta.call.arguments) == {"city": "Paris"}
    assert delta.call.id.startswith("call_")


@pytest.mark.parametrize("chunk", [None, 1, 5])
def test_text_around_calls_stays_content(chunk: int | None) -> None:
    text = f"Let me check.\n{CALL}\n{CALL.replace('Paris', 'Oslo')}\nDone <tool"
    content, calls, failures = run(text, chunk)
    assert [json.loads(c.call.arguments)["city"] for c in calls] == ["Paris", "Oslo"]
    assert [c.index for c in calls] == [0, 1]
    assert content == "Let me check.\nDone <tool" and failures == 0


def test_plain_text_with_angle_brackets_is_untouched() -> None:
    text = "if a <b and c> d: <tool_calls are fine>"
    assert run(text, 1) == (text, [], 0)


def test_invalid_json_is_returned_and_counted() -> None:
    content, calls, failures = run(
        '<tool_call>\n{"name": "get_weather", "arguments": {"ci\n</tool_call>'
    )
    (delta,) = calls
    assert delta.call.name == "get_weather" and '"ci' in delta.call.arguments
    assert failures == 1 and content == ""


@pytest.mark.parametrize(
    "body",
    [
        '{"name": "get_weather", "arguments": {"town": "Paris"}}',  # required city missing
        '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "k"}}',  # not in enum
        '{"name": "launch_rocket", "arguments": {}}',  # not an offered tool
        '{"name": "get_weather", "arguments": "not json"}',
    ],
)
def test_arguments_not_matching_the_schema_are_returned_and_counted(body: str) -> None:
    _, calls, failures = run(f"<tool_call>\n{body}\n</tool_call>")
    assert len(calls) == 1 and failures == 1


def test_arguments_as_a_json_string_are_normalized() -> None:
    body = json.dumps({"name": "get_weather", "arguments": json.dumps({"city": "Rome"})})
    _, (delta,), failures = run(f"<tool_call>{body}</tool_call>")
    assert json.loads(delta.call.arguments) == {"city": "Rome"} and failures == 0


def test_an_unclosed_call_at_the_end_is_parsed() -> None:
    _, (delta,), failures = run(CALL.removesuffix("\n</tool_call>"), 4)
    assert delta.call.name == "get_weather" and failures == 0


def test_matches_subset() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    assert matches({"n": 3}, schema)
    assert not matches({"n": "3"}, schema) and not matches({"n": True}, schema)
    assert not matches({"n": 1, "x": 2}, {**schema, "additionalProperties": False})
    assert matches([1, 2], {"type": "array", "items": {"type": "number"}})


@pytest.mark.parametrize("chunk", [None, 1])
def test_a_bare_json_call_without_tags_is_a_call(chunk: int | None) -> None:
    text = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
    content, (delta,), failures = run(text, chunk)
    assert content == "" and delta.call.name == "get_weather" and failures == 0


def test_bare_json_that_is_not_a_call_stays_content() -> None:
    for text in ('{"city": "Paris"}', '{"name": "other", "arguments": {}}', "{not json"):
        assert run(text, 3) == (text, [], 0)


@pytest.mark.parametrize("chunk", [None, 1, 4])
def test_a_call_in_a_json_fence_is_a_call(chunk: int | None) -> None:
    text = '```json\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n```'
    content, (delta,), failures = run(text, chunk)
    assert content == "" and json.loads(delta.call.arguments) == {"city": "Paris"}
    assert failures == 0


def test_other_fences_stream_as_content() -> None:
    text = "```python\nprint(1)\n```"
    parser = ToolCallParser([WEATHER])
    assert parser.feed("```py")  # decided at once: not held to the end
    assert run(text, 2) == (text, [], 0)
    assert run("`x`", 1) == ("`x`", [], 0)


BARE_TWO = (
    '{"name": "get_weather", "arguments": {"city": "Paris"}},\n'
    '{"name": "get_weather", "arguments": {"city": "Tokyo"}}'
)


@pytest.mark.parametrize("chunk", [None, 1, 5])
@pytest.mark.parametrize(
    "text",
    [
        BARE_TWO,
        BARE_TWO.replace(",\n", "\n"),
        BARE_TWO.replace(",\n", ", "),
        f"```json\n{BARE_TWO}\n```",
    ],
)
def test_bare_json_calls_one_after_another_are_calls(text: str, chunk: int | None) -> None:
    # What the default model writes when asked about two cities with two tools offered.
    content, calls, failures = run(text, chunk)
    assert [json.loads(c.call.arguments)["city"] for c in calls] == ["Paris", "Tokyo"]
    assert [c.index for c in calls] == [0, 1] and content == "" and failures == 0


def test_bare_json_with_one_object_that_is_not_a_call_stays_content() -> None:
    text = BARE_TWO + ',\n{"city": "Oslo"}'
    assert run(text, 3) == (text, [], 0)


@pytest.mark.parametrize("chunk", [None, 1, 7])
@pytest.mark.parametrize("text", [f"{CALL}\n{CALL.replace('Paris', 'Oslo')}", BARE_TWO])
def test_with_parallel_calls_off_only_the_first_call_is_returned(
    text: str, chunk: int | None
) -> None:
    content, calls, failures = run(text, chunk, parallel=False)
    (delta,) = calls
    assert delta.index == 0 and json.loads(delta.call.arguments) == {"city": "Paris"}
    assert content == "" and failures == 0
